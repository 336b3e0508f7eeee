#!/usr/bin/env python3
"""Start one YADDB storage node; `python3 run_node.py --help` lists every flag."""
import sys

from yaddb.node.main import main

if __name__ == "__main__":
    sys.exit(main())
