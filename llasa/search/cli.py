"""`llasa tts`, `llasa voices` and `llasa voice create`: thin verbs over :class:`llasa.tts.Synthesizer`,
:class:`llasa.tts.Voice` and :class:`llasa.search.Searcher`.

They sit at the search layer because `llasa tts --search` runs a verifier-guided search; the
voice verbs drive only `llasa.tts` but stay beside the verb that speaks with their voices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llasa.search.cli_args import (
    add_sampling_arguments,
    add_search_arguments,
    asr_backends,
    check_generation_args,
    sampling_from_args,
    searcher_from_args,
)


def add_commands(subparsers) -> None:
    from llasa.tts import MAX_CANDIDATES, MAX_INPUT_CHARS

    tts = subparsers.add_parser("tts", help="speak text into a wav file", description="Synthesise speech from text.")
    tts.add_argument("text", help="the text to speak (long text is split into sentences)")
    tts.add_argument("-o", "--output", required=True, help="output audio file (.wav, .flac, .ogg)")
    tts.add_argument("--model", help="Llasa model: hub id (HKUSTAudio/Llasa-1B) or local directory")
    tts.add_argument("--codec", help="X-codec2 codec: hub id or local directory")
    tts.add_argument("--voice", help="a named voice (`llasa voices`), a voice profile (.json) from `llasa voice create`, "
                     "or a reference clip to clone; default: the model's own voice")
    tts.add_argument("--voice-text", help="transcript of the reference clip (recommended: without it the clip is "
                     "transcribed by the wer verifier's ASR, --wer-model, and its mistakes are cloned too)")
    tts.add_argument("--seed", type=int, help="random seed (0 to 2**64-1), for reproducible output")
    tts.add_argument("-n", type=int, help=f"number of candidates (default 1, at most {MAX_CANDIDATES}); with n > 1 files "
                     "are named OUT-0.wav, OUT-1.wav, ...; with --search best-of-n the number searched (default 8)")  # fmt: skip
    tts.add_argument("--max-chars", type=int, default=MAX_INPUT_CHARS,
                     help=f"longest text accepted (default {MAX_INPUT_CHARS}, as the server; 0 = no limit)")  # fmt: skip
    add_sampling_arguments(tts)
    tts.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    add_search_arguments(tts)
    tts.add_argument("--repair", type=int, metavar="N", help="hear each chunk with the wer verifier's ASR (--wer-asr) "
                     "and sample again, up to N times, a chunk whose WER is above --repair-threshold; the best try is "
                     "kept (0 = off; default: the model's recommendation, else off)")  # fmt: skip
    tts.add_argument("--repair-threshold", type=float, metavar="X", help="with repair: the WER above which a chunk "
                     "is sampled again (default: the model's, else 0.5)")  # fmt: skip
    tts.add_argument("--scores", action="store_true", help="with --search: write every candidate's scores to "
                     "OUT.scores.json; with repair: what was repaired (chunk, tries, WERs)")  # fmt: skip
    tts.set_defaults(handler=run_tts)

    voices = subparsers.add_parser("voices", help="list the named voices of the built-in model (--voice NAME)")
    voices.set_defaults(handler=run_voices)

    voice = subparsers.add_parser("voice", help="voice profiles", description="Manage reusable voice profiles.")
    voice_sub = voice.add_subparsers(dest="voice_command", metavar="ACTION", required=True)
    create = voice_sub.add_parser("create", help="encode a reference clip and its transcript into a profile")
    create.add_argument("audio", help="reference clip (at least 1 s; up to 20 s are used)")
    create.add_argument("--text", help="transcript of the clip (recommended: without it the clip is transcribed by "
                        "the wer verifier's ASR, and its mistakes are cloned too)")
    create.add_argument("--wer-model", help="without --text: Whisper checkpoint directory that transcribes the clip "
                        "(default: the wer verifier's choice, the strongest ASR installed)")
    create.add_argument("--wer-asr", choices=asr_backends(), help="without --text: the ASR backend that transcribes it")
    create.add_argument("--language", default="en", help="without --text: the language the clip speaks (default en)")
    create.add_argument("-o", "--output", required=True, help="voice profile to write (.json)")
    create.add_argument("--codec", help="X-codec2 codec: hub id or local directory (the model's codec)")
    create.add_argument("--name", help="voice name (default: the clip's file name)")
    create.set_defaults(handler=run_voice_create)


def run_tts(args: argparse.Namespace) -> int:
    from llasa import audio
    from llasa.defaults import codec_or_default, model_or_default
    from llasa.lm.prompt import check_text
    from llasa.tts import MIN_VOICE_SECONDS, Synthesizer, speech_recognizer

    model, codec = model_or_default(args.model), codec_or_default(args.codec)
    check_text(args.text)
    if args.max_chars < 0:
        raise ValueError(f"--max-chars must be 0 (no limit) or more, got {args.max_chars}")
    if args.max_chars and len(args.text) > args.max_chars:
        raise ValueError(f"the text is {len(args.text)} characters; the limit is {args.max_chars} (raise it with "
                         "--max-chars N, or --max-chars 0 for none)")  # fmt: skip
    if args.n is not None and args.search not in (None, "best-of-n"):
        raise ValueError(f"-n is the candidate count of best-of-n; --search {args.search} uses --beam-width and --expand")
    if args.n is None:
        args.n = 8 if args.search == "best-of-n" else 1
    check_generation_args(args)
    if args.voice_text and not args.voice:
        raise ValueError("--voice-text needs --voice (the clip it transcribes)")
    # a clip to clone is read before the model loads, so a bad clip (or a missing ASR) fails at once
    clip = audio.load(args.voice, min_seconds=MIN_VOICE_SECONDS) if is_clip(args.voice, args.voice_text) else None
    asr = speech_recognizer(args.wer_model, args.wer_asr) if clip is not None and args.voice_text is None else None
    check_repair_args(args)
    output = audio.check_output(args.output)
    # a named voice or a profile is found before the model loads; a clip is encoded after it
    voice = resolve_voice(args.voice, args.voice_text, None, model) if clip is None else None
    searcher = searcher_from_args(args)
    synth = Synthesizer.from_pretrained(model, codec, device=args.device)
    if clip is not None:
        voice = synth.voice(clip, args.voice_text, name=Path(args.voice).stem, source_rate=audio.SAMPLE_RATE, asr=asr,
                            language=args.language)  # fmt: skip
    if searcher is not None and searcher.voice_verifiers and voice is None:
        raise ValueError(f"verifier(s) {', '.join(searcher.voice_verifiers)} compare with a voice prompt: pass --voice")
    params = sampling_from_args(args, synth)
    if searcher is None and args.search is None and args.n == 1 and not args.repair:
        searcher = recommended_search(args, synth)
    repair = repair_from_args(args, synth) if searcher is None else False
    if args.scores and searcher is None and not repair:
        raise ValueError("--scores needs --search (it writes the candidates' verifier scores) or repair (--repair N)")
    if searcher is not None:
        found = searcher(synth, args.text, voice, prompt_audio=clip, language=args.language, params=params,
                         seed=args.seed, progress=True)  # fmt: skip
        print(audio.write(output, found.audio, synth.sample_rate))
        if args.scores:
            report = output.with_name(f"{output.stem}.scores.json")
            report.write_text(json.dumps(found.to_dict(), indent=1, ensure_ascii=False))
            print(report)
        return 0
    repairs = []
    result = synth.tts(args.text, voice, params=params, seed=args.seed, n=args.n, repair=repair, repairs=repairs)
    if args.n == 1:
        print(audio.write(output, result, synth.sample_rate))
        if args.scores:
            report = output.with_name(f"{output.stem}.scores.json")
            report.write_text(json.dumps({"repair": {"retries": repair.retries, "threshold": repair.threshold},
                                          "chunks": [r.to_dict() for r in repairs]}, indent=1, ensure_ascii=False))  # fmt: skip
            print(report)
    else:
        for i, wav in enumerate(result):
            print(audio.write(output.with_name(f"{output.stem}-{i}{output.suffix}"), wav, synth.sample_rate))
    return 0


def recommended_search(args: argparse.Namespace, synth):
    """The search the model recommends (``llasa_search``, :meth:`Searcher.of_model`) with the wer
    flags given, said on stderr; None when it recommends none, or, with a note, when its verifier's
    packages are missing (one sample is spoken instead)."""
    import sys

    from llasa.extras import MissingExtra
    from llasa.search import Searcher
    from llasa.search.cli_args import wer_options
    from llasa.tts import MAX_CANDIDATES

    searcher = Searcher.of_model(synth.model, wer_options=wer_options(args.wer_model, args.wer_asr), max_rows=MAX_CANDIDATES)
    if searcher is None:
        return None
    try:
        searcher.load()
    except MissingExtra as exc:
        print(f"llasa tts: note: this model recommends a search that needs a package not installed ({exc}); "
              "speaking one sample (--search none: the same, without this note)", file=sys.stderr)  # fmt: skip
        return None
    print(f"llasa tts: {searcher.describe()}, as the model recommends (--search none: one sample)", file=sys.stderr)
    return searcher


def check_repair_args(args: argparse.Namespace) -> None:
    """--repair and --repair-threshold, before any model loads."""
    if args.repair is not None and args.repair < 0:
        raise ValueError(f"--repair must be 0 (off) or more retries, got {args.repair}")
    if args.repair_threshold is not None and not args.repair_threshold >= 0:
        raise ValueError(f"--repair-threshold must be a WER >= 0, got {args.repair_threshold}")
    if args.repair and args.search not in (None, "none"):
        raise ValueError("--repair samples one candidate per chunk; --search already picks among candidates")
    if args.repair and args.n != 1:
        raise ValueError(f"--repair keeps the best of a chunk's tries, one candidate: drop -n {args.n}")
    if args.repair == 0 and args.repair_threshold is not None:
        raise ValueError("--repair-threshold with --repair 0 (off)")


def repair_from_args(args: argparse.Namespace, synth):
    """The repair `llasa tts` runs: the model's recommendation (``synth.text_limits.repair``) with the
    flags given, a new one from --repair N, or False (off: --repair 0, -n > 1, or none recommended)."""
    from dataclasses import replace

    from llasa.search.cli_args import wer_options
    from llasa.tts import Repair

    recommended = synth.text_limits.repair
    if args.repair == 0 or (args.repair is None and (recommended is None or args.n != 1)):
        if args.repair is None and args.repair_threshold is not None:
            raise ValueError("--repair-threshold needs --repair N: this model recommends no repair")
        return False
    given = {"retries": args.repair, "threshold": args.repair_threshold}
    return replace(recommended or Repair(), **{k: v for k, v in given.items() if v is not None},
                   **wer_options(args.wer_model, args.wer_asr), language=args.language)  # fmt: skip


def is_clip(voice: str | None, voice_text: str | None) -> bool:
    """Whether --voice names a clip to clone: it comes with --voice-text, or it is an existing
    file that is neither a .json profile nor (first) the name of a shipped voice."""
    from llasa.defaults import named_voices

    if voice is None:
        return False
    if voice_text is not None:
        return True
    return Path(voice).suffix.lower() != ".json" and voice not in named_voices() and Path(voice).is_file()


def resolve_voice(voice: str | None, voice_text: str | None, synth, model_dir: str):
    """--voice as a clip (+ --voice-text, else transcribed), a .json profile, or the name of a
    shipped voice; without --voice, the model's default voice if it ships voices (llasa.defaults)."""
    from llasa.defaults import default_voice_name, model_voices, named_voices
    from llasa.tts import Voice

    if voice is None:
        name = default_voice_name(model_dir)
        return Voice.load(model_voices(model_dir)[name]) if name else None
    if is_clip(voice, voice_text):
        return synth.voice(voice, voice_text)
    if Path(voice).suffix.lower() == ".json":
        return Voice.load(voice)
    names = named_voices()
    if voice in names:
        return Voice.load(names[voice])
    if Path(voice).suffix or "/" in voice:  # meant as a file
        raise ValueError(f"--voice {voice!r}: no such file (a reference clip or a .json voice profile)")
    known = ", ".join(names) or "none are installed"
    raise ValueError(f"--voice {voice!r} is neither a file nor a named voice (named voices: {known}; see `llasa voices`)")


def run_voices(args: argparse.Namespace) -> int:
    from llasa.defaults import default_voice_name, named_voices
    from llasa.tts import Voice

    names = named_voices()
    if not names:
        print("no named voices are installed (the built-in default model has not been trained in this checkout)")
        return 0
    default = default_voice_name()
    for name, path in names.items():
        voice = Voice.load(path)
        marker = " (default)" if name == default else ""
        print(f"{name}{marker}\t{voice.seconds:.1f} s\t{voice.text}")
    return 0


def run_voice_create(args: argparse.Namespace) -> int:
    from llasa import audio
    from llasa.codec import Codec
    from llasa.defaults import codec_or_default
    from llasa.lm.prompt import check_text
    from llasa.tts import MIN_VOICE_SECONDS, Voice, speech_recognizer

    name = codec_or_default(args.codec)
    if args.text is not None:
        check_text(args.text, what="--text (the clip's transcript)")
        given = [flag for flag, value in (("--wer-model", args.wer_model), ("--wer-asr", args.wer_asr)) if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)}: only without --text (they choose the ASR that transcribes the clip)")
    audio.check_writable(args.output)
    # the clip is read before the codec loads, so a bad clip (or a missing ASR) fails at once
    wav = audio.load(args.audio, min_seconds=MIN_VOICE_SECONDS)
    asr = speech_recognizer(args.wer_model, args.wer_asr) if args.text is None else None
    codec = Codec.from_pretrained(name)
    voice = Voice.from_audio(codec, wav, args.text, name=args.name or Path(args.audio).stem, source_rate=audio.SAMPLE_RATE,
                             asr=asr, language=args.language)  # fmt: skip
    path = voice.save(args.output)
    heard = f", transcript heard by the ASR: \"{voice.text}\"" if voice.transcribed else ""
    print(f"{path}: voice '{voice.name}', {voice.seconds:.1f} s, {len(voice.codes)} codes{heard}")
    return 0
