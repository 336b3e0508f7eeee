"""`python3 -m yaddb COMMAND`: today `keygen DIR` (the `yaddb` command comes with packaging)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m yaddb", description="YADDB's tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keygen = commands.add_parser(
        "keygen", help="make a cluster's CURVE keys: one member pair (every node and router) "
        "and client pairs; secret files are 0600")
    keygen.add_argument("directory", metavar="DIR", help="folder for the keys (created 0700)")
    keygen.add_argument("--clients", type=int, default=1, help="client pairs to make")
    args = parser.parse_args(argv)

    from yaddb.errors import YaddbError
    from yaddb.transport.keys import make_keys
    try:
        written = make_keys(args.directory, args.clients)
    except YaddbError as exc:
        print(f"yaddb keygen: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print("Give every node and router --keys-dir with member.key and member.key_secret; give "
          "each client machine member.key and its own client-N.key and client-N.key_secret.",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
