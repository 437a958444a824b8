"""`llasa tts` and `llasa voice create`: thin verbs over :class:`llasa.tts.Synthesizer` and :class:`llasa.tts.Voice`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(subparsers) -> None:
    tts = subparsers.add_parser("tts", help="speak text into a wav file", description="Synthesise speech from text.")
    tts.add_argument("text", help="the text to speak (long text is split into sentences)")
    tts.add_argument("-o", "--output", required=True, help="output audio file (.wav, .flac, .ogg)")
    tts.add_argument("--model", help="Llasa model: hub id (HKUSTAudio/Llasa-1B) or local directory")
    tts.add_argument("--codec", help="X-codec2 codec: hub id or local directory")
    tts.add_argument("--voice", help="reference clip to clone, or a voice profile (.json) from `llasa voice create`")
    tts.add_argument("--voice-text", help="transcript of the reference clip (required with a clip)")
    tts.add_argument("--seed", type=int, help="random seed, for reproducible output")
    tts.add_argument("-n", type=int, default=1, help="number of candidates; with n > 1 files are named OUT-0.wav, OUT-1.wav, ...")
    tts.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy; default 0.8)")
    tts.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default 1.0 = off)")
    tts.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")
    tts.add_argument("--repetition-penalty", type=float, default=1.0, help="penalty on repeated speech tokens (1 = off)")
    tts.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    tts.set_defaults(handler=run_tts)

    voice = subparsers.add_parser("voice", help="voice profiles", description="Manage reusable voice profiles.")
    voice_sub = voice.add_subparsers(dest="voice_command", metavar="ACTION", required=True)
    create = voice_sub.add_parser("create", help="encode a reference clip and its transcript into a profile")
    create.add_argument("audio", help="reference clip (at least 1 s; up to 20 s are used)")
    create.add_argument("--text", required=True, help="transcript of the clip")
    create.add_argument("-o", "--output", required=True, help="voice profile to write (.json)")
    create.add_argument("--codec", help="X-codec2 codec: hub id or local directory (the model's codec)")
    create.add_argument("--name", help="voice name (default: the clip's file name)")
    create.set_defaults(handler=run_voice_create)


def _required(value: str | None, default, flag: str) -> str:
    value = value or default()
    if value is None:
        raise ValueError(f"{flag} is required (no default is published yet): pass a hub id or a local directory")
    return value


def run_tts(args: argparse.Namespace) -> int:
    from llasa import audio
    from llasa.tts import Synthesizer, Voice, default_codec_path, default_model_path

    model = _required(args.model, default_model_path, "--model")
    codec = _required(args.codec, default_codec_path, "--codec")
    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    if args.voice_text and not args.voice:
        raise ValueError("--voice-text needs --voice (the clip it transcribes)")
    synth = Synthesizer.from_pretrained(model, codec, device=args.device)
    voice = None
    if args.voice:
        if Path(args.voice).suffix.lower() == ".json":
            voice = Voice.load(args.voice)
        elif not args.voice_text:
            raise ValueError("--voice-text is required with a voice clip (its transcript); or pass a .json voice profile")
        else:
            voice = synth.voice(args.voice, args.voice_text)
    result = synth.tts(
        args.text,
        voice,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        n=args.n,
    )
    output = Path(args.output)
    if args.n == 1:
        print(audio.write(output, result, synth.sample_rate))
    else:
        for i, wav in enumerate(result):
            print(audio.write(output.with_name(f"{output.stem}-{i}{output.suffix}"), wav, synth.sample_rate))
    return 0


def run_voice_create(args: argparse.Namespace) -> int:
    from llasa.codec import Codec
    from llasa.tts import Voice, default_codec_path

    codec = Codec.from_pretrained(_required(args.codec, default_codec_path, "--codec"))
    voice = Voice.from_audio(codec, args.audio, args.text, name=args.name)
    path = voice.save(args.output)
    print(f"{path}: voice '{voice.name}', {voice.seconds:.1f} s, {len(voice.codes)} codes")
    return 0
