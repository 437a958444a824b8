"""A PocketSphinx process: 16-bit 16 kHz clips in on stdin, transcripts out on stdout.

:class:`llasa.verify.wer.PocketSphinxASR` starts it (``python -m llasa.verify.sphinx_worker
[--fast]``) because PocketSphinx holds Python's lock while it decodes: in a process of its own it
listens on another core while a search samples. A plain child process rather than
``multiprocessing``: spawning would re-import the caller's main script in the child.

Protocol, per request: a 4-byte little-endian clip count, then each clip as a 4-byte length and
its PCM bytes; the reply is one JSON line, the list of transcripts.
"""

from __future__ import annotations

import json
import os
import struct
import sys


def read_exactly(stream, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def main() -> None:
    from llasa.extras import require

    pocketsphinx = require("pocketsphinx", "the wer verifier (PocketSphinx)")
    decoder = pocketsphinx.Decoder(samprate=16000, logfn=os.devnull, fwdflat="--fast" not in sys.argv[1:])
    source, sink = sys.stdin.buffer, sys.stdout
    while (header := read_exactly(source, 4)) is not None:
        out = []
        for _ in range(struct.unpack("<I", header)[0]):
            (size,) = struct.unpack("<I", read_exactly(source, 4))
            pcm = read_exactly(source, size)
            # a fresh front end per clip: otherwise its noise and CMN estimates carry over from the
            # clips decoded before, and one file's transcript depends on what came earlier
            decoder.reinit_feat()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            out.append(hyp.hypstr if hyp is not None else "")
        sink.write(json.dumps(out) + "\n")
        sink.flush()


if __name__ == "__main__":
    main()
