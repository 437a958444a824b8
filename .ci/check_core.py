"""In the core install (README command 1, no extras): every module that needs no extra imports,
and `llasa --help` and every `llasa VERB [ACTION] --help` work."""

import argparse
import contextlib
import importlib
import io
import pkgutil
import sys

import llasa
from llasa.cli import build_parser, main

# the server itself is the `serve` extra's feature (build_app names the extra when it is missing)
NEEDS_EXTRA = {"llasa.serve.app"}


def verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from verbs(sub, prefix + (name,))


def main_check() -> int:
    modules = [m.name for m in pkgutil.walk_packages(llasa.__path__, "llasa.") if m.name not in NEEDS_EXTRA]
    for name in modules:
        importlib.import_module(name)
    commands = [()] + list(verbs(build_parser()))
    for command in commands:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                main([*command, "--help"])
        except SystemExit as exit:
            if exit.code != 0:
                print(f"llasa {' '.join(command)} --help exited {exit.code}", file=sys.stderr)
                return 1
    print(f"core install: {len(modules)} modules import, {len(commands)} commands print their help", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main_check())
