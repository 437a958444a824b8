"""The flags of speech generation that `llasa tts` and `llasa eval tts|scaling` share: sampling,
the candidate count and verifier-guided search. They read names of the lm, tts and search layers,
so they live at the search layer, apart from any one verb's module.
"""

from __future__ import annotations

import argparse


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of verifier-guided search (`llasa tts --search`, `llasa eval tts --search`)."""
    from llasa.search import STRATEGIES

    group = parser.add_argument_group("search", "verifier-guided inference-time search (llasa.search)")
    group.add_argument("--search", choices=(*STRATEGIES, "none"), help="best-of-n (-n candidates, outcome verifier), "
                       "beam (partial sequences, process verifier), the paper's prm-sim+orm-wer, or none (one sample "
                       "per chunk); default: `llasa tts` searches as the model recommends (llasa_search in its config), "
                       "else none")  # fmt: skip
    group.add_argument("--verifier", help="verifier(s) with weights, e.g. wer or sim:1,wer:0.5 (default wer); "
                       "the process verifier of beam search")  # fmt: skip
    group.add_argument("--final-verifier", help="beam search: outcome verifier(s) that pick among the finished beams")
    group.add_argument("--normalize", choices=("zscore", "rank"), default="zscore", help="how combined verifiers are normalised")
    group.add_argument("--beam-width", type=int, help="beam search: beams kept after each step (default 2)")
    group.add_argument("--expand", type=int, help="beam search: continuations per kept beam (default 4)")
    group.add_argument("--step-tokens", type=int, help="beam search: tokens between verifier calls (default 50 = 1 s)")
    group.add_argument("--max-tokens", type=int, help="budget: speech tokens sampled over all candidates")
    group.add_argument("--wer-model", help="Whisper checkpoint directory for the wer verifier (default: its own "
                       "choice, the strongest ASR installed)")  # fmt: skip
    group.add_argument("--wer-asr", choices=asr_backends(), help="the wer verifier's ASR backend (default: the "
                       "model's kind, else the strongest installed)")  # fmt: skip
    group.add_argument("--sim-model", help="speaker-verification checkpoint for the sim verifier (default Resemblyzer)")
    group.add_argument("--language", default="en", help="language of the text, for the wer verifier (default en)")


def asr_backends() -> tuple[str, ...]:
    from llasa.verify.wer import ASR_BACKENDS

    return ASR_BACKENDS


def wer_options(model: str | None, asr: str | None) -> dict:
    """Constructor options of the wer verifier (``get_verifier("wer", **options)``) from its flags."""
    return {key: value for key, value in (("model", model), ("asr", asr)) if value is not None}


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Sampling flags; those not given are the model's own (`llasa_sampling` in its config.json),
    else the official temperature 0.8, top-p 1.0."""
    parser.add_argument("--temperature", type=float, help="sampling temperature (0 = greedy; default: the model's, else 0.8)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling threshold (default: the model's, else 1.0 = off)")
    parser.add_argument("--top-k", type=int, help="sample from the k most likely tokens only (0 = off; default: the model's, else off)")
    parser.add_argument("--repetition-penalty", type=float,
                        help="penalty on repeated speech tokens (default: the model's, else 1 = off)")  # fmt: skip
    parser.add_argument("--ras-window", type=int, help="repetition-aware sampling: a code that fills --ras-threshold "
                        "of the last N codes is drawn again without top-k/top-p (default: the model's, else 0 = off; "
                        "CosyVoice uses 10)")  # fmt: skip
    parser.add_argument("--ras-threshold", type=float, help="repetition-aware sampling: the share of the window "
                        "that counts as repeating (default: the model's, else 0.1)")  # fmt: skip


def sampling_from_args(args: argparse.Namespace, synth=None):
    """The synthesizer's model's sampling, with the flags that were given; without ``synth``, the
    official sampling with those flags (checks the flags before a model is loaded)."""
    from llasa.lm.sampling import SamplingParams

    base = SamplingParams() if synth is None else synth.sampling
    return base.but(**{name: getattr(args, name) for name in SamplingParams.names()})


def check_generation_args(args: argparse.Namespace) -> None:
    """-n (where the verb has it), --seed and the sampling flags, before any model loads. -n is at
    most :data:`llasa.tts.MAX_CANDIDATES`, the server's limit too (beam search's rows are checked by its Searcher)."""
    from llasa.lm.sampling import check_seed
    from llasa.tts import MAX_CANDIDATES

    n = getattr(args, "n", None)
    if n is not None and n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    if n is not None and n > MAX_CANDIDATES:
        raise ValueError(f"-n {n}: at most {MAX_CANDIDATES} candidates are sampled side by side")
    check_seed(args.seed, name="--seed")
    sampling_from_args(args)


def searcher_from_args(args: argparse.Namespace, *, verifier_cache: dict | None = None):
    """A Searcher from the search flags, or None without --search (beam flags then are an error).
    ``verifier_cache``: verifiers already loaded (by name) for the searcher to reuse."""
    beam_flags = {"--beam-width": args.beam_width, "--expand": args.expand, "--step-tokens": args.step_tokens,
                  "--final-verifier": args.final_verifier}  # fmt: skip
    if args.search in (None, "none"):
        given = [flag for flag, value in {**beam_flags, "--verifier": args.verifier, "--max-tokens": args.max_tokens}.items()
                 if value is not None]  # fmt: skip
        if given:
            raise ValueError(f"{', '.join(given)} needs --search")
        return None
    from llasa.search import Searcher
    from llasa.tts import MAX_CANDIDATES

    if args.search == "best-of-n":
        given = [flag for flag, value in beam_flags.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to beam search, not best-of-n")
    beam = {k: v for k, v in (("beam_width", args.beam_width), ("expand", args.expand), ("step_tokens", args.step_tokens))
            if v is not None}  # fmt: skip
    options = {"wer": wer_options(args.wer_model, args.wer_asr), "sim": {"model": args.sim_model} if args.sim_model else {}}
    return Searcher(
        args.search,
        max_rows=MAX_CANDIDATES,
        verifiers=args.verifier,
        final_verifiers=args.final_verifier,
        n=args.n,
        max_tokens=args.max_tokens,
        normalize=args.normalize,
        verifier_options=options,
        verifier_cache=verifier_cache,
        **beam,
    )
