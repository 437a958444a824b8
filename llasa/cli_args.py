"""Argument types and flags that the verbs of several layers share.

It imports nothing of llasa, so the `cli` module of any layer can use it without reaching a
higher layer or forming a cycle (`llasa.cli`, which registers every verb, imports it too).
The flags of speech generation (sampling, search) need the search layer and live in
`llasa.search.cli_args`.
"""

from __future__ import annotations

import argparse


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def add_refine_argument(parser: argparse.ArgumentParser) -> None:
    """``--refine-steps`` of `llasa codec encode|resynth` and `llasa eval codec`: None when not
    given, which `Codec.encode` reads as the codec's recommendation."""
    parser.add_argument("--refine-steps", type=non_negative_int,
                        help="analysis-by-synthesis encoding: tune the codes through the decoder for N steps "
                             "(default: the codec's recommendation, 0 for the released checkpoints)")  # fmt: skip
