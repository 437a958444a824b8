"""Is WAV the speech of TEXT? Its length is plausible for the text and the offline ASR verifier
(`wer`: Whisper tiny.en once the `verify` extra is installed) hears it.
Usage: python .ci/check_speech.py WAV TEXT [--max-wer 0.75]

The shipped model's README sentence, 9 draws (seeds 1-8 and one unseeded): WER 0-0.44 by
Whisper tiny.en (median 0.11), 3.1-3.9 s. The threshold leaves room for an unlucky draw of a
one-shot gate while silence (WER 1.0, all deleted) or babble fails.
"""

import argparse
import sys

from llasa.audio import SAMPLE_RATE, load
from llasa.verify import VerifyRequest, get_verifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav")
    parser.add_argument("text")
    parser.add_argument("--max-wer", type=float, default=0.75, help="fail at or above this WER")
    args = parser.parse_args()
    wav = load(args.wav)
    seconds = len(wav) / SAMPLE_RATE
    # 8-25 characters a second spans slow to fast speech (llasa.tts bounds generation the same way)
    low, high = len(args.text) / 25, len(args.text) / 8 + 2.0
    verifier = get_verifier("wer")
    request = VerifyRequest(text=args.text)
    score = verifier.score([wav], request, verifier.prepare(request))[0]
    wer = score.components["wer"]
    print(f"{args.wav}: {seconds:.2f} s (plausible {low:.1f}-{high:.1f} s), WER {wer:.2f} (must be < {args.max_wer})")
    return 0 if low <= seconds <= high and wer < args.max_wer else 1


if __name__ == "__main__":
    sys.exit(main())
