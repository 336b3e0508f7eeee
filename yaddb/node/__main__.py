"""`python3 -m yaddb.node`: one storage node, as run_node.py and yaddb-node."""
import sys

from yaddb.node.main import main

sys.exit(main())
