#!/usr/bin/env python3
"""Start the YADDB router; with no --nodes, the whole local cluster. `--help` lists every flag."""
import sys

from yaddb.router.main import main

if __name__ == "__main__":
    sys.exit(main())
