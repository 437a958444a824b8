"""`llasa codec encode|decode|resynth`: thin verbs over `llasa.codec.Codec`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from llasa.cli_args import add_refine_argument
from llasa.defaults import codec_or_default


def _codec(name: str):
    from llasa.codec import Codec

    return Codec.from_pretrained(name)


def _encode(args: argparse.Namespace) -> int:
    from llasa.audio import check_writable, load

    name = codec_or_default(args.codec)
    check_writable(args.output)
    wav = load(args.input)
    codec = _codec(name)
    codes = codec.encode(wav, refine_steps=args.refine_steps)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, codes)
    print(f"{args.output}: {len(codes)} codes ({len(wav) / 16000:.2f} s of audio)")
    return 0


def _decode(args: argparse.Namespace) -> int:
    from llasa.audio import check_output, write

    name = codec_or_default(args.codec)
    check_output(args.output)
    path = Path(args.input)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}': no such codes file")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # np.load would take any other file for a pickle
            raise ValueError(f"'{path}' is not a .npy file (write codes with `llasa codec encode` or numpy.save)")
    try:
        codes = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # an object array, or a file cut short
        raise ValueError(f"'{path}' is not a .npy array of codes ({exc})") from None
    codec = _codec(name)
    wav = codec.decode(codes.reshape(-1) if codes.ndim == 2 and 1 in codes.shape else codes)
    write(args.output, wav, codec.sample_rate)
    print(f"{args.output}: {len(wav) / codec.sample_rate:.2f} s of audio from {codes.size} codes")
    return 0


def _resynth(args: argparse.Namespace) -> int:
    from llasa.audio import check_output, load, write

    name = codec_or_default(args.codec)
    check_output(args.output)
    wav = load(args.input)
    codec = _codec(name)
    codes = codec.encode(wav, refine_steps=args.refine_steps)
    write(args.output, codec.decode(codes)[: len(wav)], codec.sample_rate)
    print(f"{args.output}: resynthesised through {len(codes)} codes")
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("codec", help="X-codec2: audio <-> speech codes")
    verbs = parser.add_subparsers(dest="codec_command", metavar="VERB", required=True)

    def verb(name: str, help: str, handler, input_help: str, output_help: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help)
        sub.add_argument("input", help=input_help)
        sub.add_argument("-o", "--output", required=True, help=output_help)
        sub.add_argument("--codec", help="hub id or local directory of the codec (either checkpoint layout)")
        sub.set_defaults(handler=handler)
        return sub

    add_refine_argument(
        verb("encode", "audio file -> codes (.npy, int64)", _encode, "audio file (any rate; mixed to mono 16 kHz)", "codes.npy")
    )
    verb("decode", "codes (.npy) -> 16 kHz wav", _decode, "codes .npy (1-D, or (1, T))", "output audio file")
    add_refine_argument(verb("resynth", "audio -> codes -> audio", _resynth, "audio file", "output audio file"))
