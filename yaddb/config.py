"""Command-line flags that can also come from YADDB_* environment variables or a .env file.

A flag given on the command line wins, then the environment, then .env, then the default.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Optional, Sequence

from dotenv import load_dotenv

from yaddb.placement import is_loopback

log = logging.getLogger(__name__)


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


def protected_mode_allows(host: str, protected: bool, insecure: bool, what: str,
                          fix: str) -> bool:
    """Redis's protected mode: `what` may listen beyond loopback only when `protected`
    (keys, a token), or with --insecure, which is said loudly at every start. The refusal
    names `fix`, the flag that protects it."""
    if is_loopback(host) or protected:
        return True
    if insecure:
        log.warning("INSECURE: %s on %s serves without protection (--insecure): anyone who "
                    "reaches it can read and change every key", what, host)
        return True
    log.error("refusing to serve %s on %s unprotected (protected mode): give %s, listen on "
              "127.0.0.1, or pass --insecure to serve anyone who reaches it", what, host, fix)
    return False
