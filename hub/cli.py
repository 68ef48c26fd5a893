"""The ``tag2text`` console script.

Each subcommand lives in its own module, imported only when that subcommand runs, so that
``tag2text mine-tags`` does not pay for importing torch and ``tag2text --help`` stays fast.
A subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "caption": ("tag2text.hub.caption_command", "tag and caption images with a Tag2Text model"),
    "convert": ("tag2text.hub.convert_command", "convert the original tag2text_swin_14m.pth checkpoint"),
    "push": ("tag2text.hub.push_command", "upload a model directory to the Hugging Face Hub"),
    "mine-tags": ("tag2text.processing.mine_tags_command", "parse captions into object/attribute/action tags"),
    "build-tag-list": ("tag2text.processing.build_tag_list_command", "build a tag list from a caption corpus"),
    "score-captions": ("tag2text.training.metrics.score_captions_command", "BLEU/METEOR/ROUGE-L/CIDEr of captions"),
    "train": ("tag2text.training.train_command", "train or fine-tune Tag2Text with the Trainer"),
    "evaluate": ("tag2text.training.evaluate_command", "tagging, captioning and retrieval metrics of a model"),
    "quickstart": ("tag2text.training.quickstart_command", "train a tiny model on built-in synthetic data"),
    "serve": ("tag2text.hub.serve_command", "web demo and HTTP API (dynamic batching) for a model"),
}


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, help_text)
    return found


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tag2text", description="Tag2Text command-line tools.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _available().items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-") and a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
