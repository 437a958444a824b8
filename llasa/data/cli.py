"""`llasa data manifest|synth|tokenize`: thin verbs over `llasa.data`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _manifest(args: argparse.Namespace) -> int:
    from llasa.audio import check_writable
    from llasa.data.manifest import load_corpus, with_durations, write_jsonl

    check_writable(args.output)
    options = {"split": args.split} if args.format == "hf" and args.split else {}
    items = load_corpus(args.src, args.format, **options)
    if not args.no_durations:
        items = with_durations(items)
    # counted on the way through: the corpus streams from its source into the manifest
    count, seconds, speakers = 0, 0.0, set()

    def tally(items):
        nonlocal count, seconds
        for item in items:
            count, seconds = count + 1, seconds + (item.get("duration") or 0.0)
            speakers.add(item.get("speaker"))
            yield item

    write_jsonl(tally(items), args.output)
    print(f"{args.output}: {count} utterances, {len(speakers)} speaker(s), {seconds / 3600:.2f} h")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from llasa.audio import check_writable
    from llasa.data.synth import synthesize_corpus

    check_writable(args.out, folder=True, what="output folder")
    summary = synthesize_corpus(
        args.out, sentences=args.sentences, hours=args.hours, voices=args.voices, held_out=args.held_out,
        seed=args.seed, per_sentence=args.per_sentence, workers=args.workers, exclude=args.exclude or (),
    )
    print(json.dumps(summary))
    return 0 if summary["failed"] == 0 else 1


def _device(args: argparse.Namespace) -> str:
    if args.device:
        return args.device
    import torch

    # one GPU per process under torchrun / accelerate launch
    return f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"


def _tokenize(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from llasa.audio import check_writable
    from llasa.codec import Codec
    from llasa.data.tokenize import distributed_rank, tokenize_manifest
    from llasa.lm.frontend import Frontend
    from llasa.lm.vocab import build_tokenizer, has_token, speech_token

    rank, world_size = distributed_rank(args.rank, args.world_size)
    # what can be checked without the codec is checked before it loads
    if not Path(args.manifest).is_file():
        raise FileNotFoundError(f"manifest '{args.manifest}': no such file")
    check_writable(args.out, folder=True, what="output folder")
    Frontend(args.frontend)
    codec = Codec.from_pretrained(args.codec, device=_device(args))
    if args.tokenizer:
        tokenizer, tokenizer_name = AutoTokenizer.from_pretrained(args.tokenizer), str(args.tokenizer)
        if not has_token(tokenizer, speech_token(0)):
            # a base Llama-3 tokenizer (the official recipe starts from Llama-3.2-*-Instruct's):
            # extend it with the control and speech tokens for this codec
            tokenizer = build_tokenizer(tokenizer, codec.codebook_size)
            tokenizer_name += f" + Llasa tokens for {codec.codebook_size} codes"
    else:
        tokenizer = build_tokenizer(None, codec.codebook_size)
        tokenizer_name = f"byte-level (llasa.lm.vocab.build_tokenizer(None, {codec.codebook_size}))"
    if rank == 0:
        # the exact tokenizer beside the shards, so training reads the rows as they were made
        tokenizer.save_pretrained(str(Path(args.out) / "tokenizer"))
    progress = tokenize_manifest(
        args.manifest, args.out, codec=codec, tokenizer=tokenizer, codec_name=str(args.codec),
        tokenizer_name=tokenizer_name, batch_size=args.batch_size, max_length=args.max_length,
        text_field=args.text_field, frontend=args.frontend, refine_steps=args.refine_steps, rank=rank,
        world_size=world_size,
    )
    print(f"{args.out}: rank {rank}/{world_size}: {progress['rows']} rows, {progress['skipped']} skipped, "
          f"{progress['seconds'] / 3600:.2f} h of audio")
    return 0


def add_commands(subparsers) -> None:
    from llasa.cli_args import non_negative_int, positive_int
    from llasa.data.manifest import FORMATS
    from llasa.data.synth import VOICES

    data = subparsers.add_parser("data", help="corpora: manifests, the synthetic corpus, code shards")
    verbs = data.add_subparsers(dest="data_command", metavar="VERB", required=True)

    p = verbs.add_parser("manifest", help="read a corpus layout into a JSONL manifest")
    p.add_argument("src", help="a folder, CSV/JSONL file, LJSpeech or LibriTTS folder, or a saved HF dataset")
    p.add_argument("-o", "--output", required=True, help="the manifest to write (.jsonl)")
    p.add_argument("--format", choices=FORMATS, help="the layout (detected when left out)")
    p.add_argument("--split", help="which split of a Hugging Face DatasetDict")
    p.add_argument("--no-durations", action="store_true", help="do not read durations from the audio headers")
    p.set_defaults(handler=_manifest)

    p = verbs.add_parser("synth", help="make an offline multi-speaker English corpus with Debian's TTS voices")
    p.add_argument("out", help="output folder (resumes when it holds a stopped run with the same settings)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--sentences", type=positive_int, help="distinct sentences")
    size.add_argument("--hours", type=float, help="about this many hours of audio")
    p.add_argument("--voices", nargs="+", metavar="VOICE",
                   help=f"voices to use ('all' adds non-commercial ones); default: every installed permissive "
                        f"voice. Known: {', '.join(VOICES)}")
    p.add_argument("--held-out", nargs="+", metavar="VOICE", help="voices kept for the unseen-speaker test split")
    p.add_argument("--per-sentence", type=positive_int, default=3, help="seen voices speaking each sentence (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, help="processes (default: one per CPU core)")
    p.add_argument("--exclude", nargs="+", metavar="CORPUS",
                   help="other corpora (folders or manifests) whose sentences this one must not say: "
                        "more data for a model trained on them, with no held-out sentence leaking into training")
    p.set_defaults(handler=_synth)

    p = verbs.add_parser("tokenize", help="encode a manifest into code shards (official memmap rows)")
    p.add_argument("manifest", help="a JSONL manifest")
    p.add_argument("out", help="output folder of shards (resumes a stopped run)")
    p.add_argument("--codec", required=True, help="codec directory or hub id")
    p.add_argument("--tokenizer", help="a Llasa tokenizer, or a Llama-3 one (its vocabulary is extended with the Llasa tokens);"
                   " default: the byte-level tokenizer for the codec")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--max-length", type=positive_int, default=2048, help="row length; longer utterances are skipped")
    p.add_argument("--refine-steps", type=non_negative_int, default=0,
                   help="encode by synthesis, N steps per batch (default 0: the encoder's own codes, which LM "
                        "prompts use; the codec's recommendation is for resynthesis)")
    p.add_argument("--text-field", default="text", help="the manifest field to read ('normalized' for spelled-out text)")
    p.add_argument("--frontend", default="text",
                   help="what the LM reads: 'text' (as the official models) or 'espeak:en-us' (IPA phonemes)")
    p.add_argument("--rank", type=int, help="this process's rank (default: $RANK)")
    p.add_argument("--world-size", type=int, help="number of ranks (default: $WORLD_SIZE)")
    p.add_argument("--device", help="default: cuda:$LOCAL_RANK when a GPU is present, else cpu")
    p.set_defaults(handler=_tokenize)
