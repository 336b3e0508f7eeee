"""`python3 -m yaddb`: the same as the `yaddb` command (yaddb/cli.py)."""
from yaddb.cli import main

if __name__ == "__main__":
    main(prog_name="yaddb")
