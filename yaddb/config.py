"""Command-line flags that can also come from YADDB_* environment variables or a .env file.

A flag given on the command line wins, then the environment, then .env, then the default.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Optional, Sequence

from dotenv import load_dotenv


def env_name(flag: str) -> str:
    """--data-dir -> YADDB_DATA_DIR"""
    return "YADDB_" + flag.lstrip("-").upper().replace("-", "_")


def add_flag(parser: argparse.ArgumentParser, *flags: str, **options: Any) -> None:
    """parser.add_argument, with the default taken from the flag's environment variable."""
    long_flag = next(flag for flag in flags if flag.startswith("--"))
    variable = env_name(long_flag)
    if variable in os.environ:
        raw = os.environ[variable]
        if options.get("action") == "store_true":  # YADDB_INSECURE=1, =true, =yes or =on
            options["default"] = raw.strip().lower() in ("1", "true", "yes", "on")
        elif options.get("nargs") in ("+", "*"):
            options["default"] = [options.get("type", str)(part) for part in raw.split()]
        else:
            options["default"] = options.get("type", str)(raw)
        options["required"] = False
    default = options.get("default")
    shown = "" if default is None else f"; default {default}"
    options["help"] = f"{options.get('help', '')} [env {variable}{shown}]".strip()
    parser.add_argument(*flags, **options)


def parse_command_line(parser: argparse.ArgumentParser,
                       argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Flags over environment over .env (loaded first), and logging set to --log-level."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args


def load_environment(dotenv_path: Optional[str] = None) -> None:
    """Read .env (from the working directory, or the given file) without overriding the
    environment that is already set."""
    load_dotenv(dotenv_path or os.path.join(os.getcwd(), ".env"), override=False)
