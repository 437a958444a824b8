"""The `llasa` command: one verb per concern, each a thin layer over a library call.

Each layer registers the verbs that drive it through ``add_commands(subparsers)`` in its ``cli``
module; a verb's handler receives the parsed ``argparse.Namespace`` and returns an exit code.
Argument types and flags that several verbs share are in `llasa.cli_args` (and, for speech
generation, `llasa.search.cli_args`), never borrowed from another verb's module.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llasa.cli_args import CLIError
from llasa.extras import MissingExtra

# modules that define `add_commands(subparsers)`; imported lazily so `llasa --help` is fast
COMMAND_MODULES = [
    "llasa.search.cli",
    "llasa.codec.cli",
    "llasa.data.cli",
    "llasa.train.cli",
    "llasa.eval.cli",
    "llasa.serve.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llasa", description="Llasa text-to-speech toolkit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from llasa import __version__

        print(__version__)
        return 0
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        return int(args.handler(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, MissingExtra) as exc:
        # library errors are written for users (they name the input and the problem); one line,
        # though a message quoted from another library may span several
        print(f"llasa {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
