"""`llasa train lm CONFIG` and `llasa train codec CONFIG`."""

from __future__ import annotations


def _config(args) -> dict:
    from llasa.config import apply_overrides, load_config_file

    return apply_overrides(load_config_file(args.config), args.set)


def _train_lm(args) -> int:
    from llasa.train.lm import train_lm

    config = _config(args)
    if args.continue_from:
        config["continue_from"] = args.continue_from
    print(train_lm(config, resume=not args.no_resume, max_steps=args.max_steps))
    return 0


def _train_codec(args) -> int:
    from llasa.train.codec import train_codec

    print(train_codec(_config(args), resume=not args.no_resume, max_steps=args.max_steps))
    return 0


def add_commands(subparsers) -> None:
    train = subparsers.add_parser("train", help="train the LM or the codec (launch with `accelerate launch` for many GPUs)")
    verbs = train.add_subparsers(dest="train_command", metavar="WHAT", required=True)
    for name, handler, what in (("lm", _train_lm, "the Llasa LM on code shards"), ("codec", _train_codec, "the X-codec2 codec")):
        p = verbs.add_parser(name, help=f"train {what}")
        p.add_argument("config", help="YAML or JSON recipe (see configs/)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override an option of the recipe, e.g. --set output_dir=runs/x --set init=preset:tiny "
                            "(dotted keys reach sections: train.max_steps=100, optim.lr=3e-4); repeatable")  # fmt: skip
        p.add_argument("--max-steps", type=int, default=None, help="stop this run after this many total steps (resume later)")
        p.add_argument("--no-resume", action="store_true", help="start afresh: delete the output directory's checkpoints and log")
        if name == "lm":
            p.add_argument("--continue-from", help="a compact checkpoint (e.g. llasa/assets/default/lm) whose run to "
                           "carry on when the output directory holds no checkpoint yet")
        p.set_defaults(handler=handler)
