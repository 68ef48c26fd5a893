"""The ``tag2text`` console script.

Each subcommand lives in its own module, imported only when that subcommand is named, so that
``tag2text --help`` and every ``tag2text COMMAND --help`` import neither torch nor transformers (a command
module imports them inside ``run``). A subcommand module defines ``add_arguments(parser)`` and
``run(args) -> int``, and may define ``parent_parser()``, a parser whose options the subcommand takes over
(``train``: transformers' ``HfArgumentParser``).

Errors a user can fix are one line on stderr, ``tag2text COMMAND: error: MESSAGE``, with exit status 2 and no
traceback: bad option values (argparse, through :class:`CliParser`), :class:`~tag2text.hub.cli_args.UsageError`
and the errors that the lower layers raise for values a user gave (models and tokenizers that cannot be used,
training options out of range). Only this package (``tag2text.hub``) speaks to the command line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .cli_args import HelpFormatter, UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "caption": ("tag2text.hub.caption_command", "tag and caption images (Tag2Text), or tag them (RAM, RAM++)"),
    "convert": ("tag2text.hub.convert_command", "convert an original Tag2Text, RAM or RAM++ checkpoint"),
    "open-set": ("tag2text.hub.open_set_command", "give a RAM or RAM++ model your own tags (CLIP text embeddings)"),
    "export": ("tag2text.hub.export_command", "export a model to ONNX (tagger, encoder, decoder) for onnxruntime"),
    "push": ("tag2text.hub.push_command", "upload a model directory to the Hugging Face Hub"),
    "mine-tags": ("tag2text.hub.mine_tags_command", "parse captions into object/attribute/action tags"),
    "build-tag-list": ("tag2text.hub.build_tag_list_command", "build a tag list from a caption corpus"),
    "score-captions": ("tag2text.hub.score_captions_command", "BLEU/METEOR/ROUGE-L/CIDEr of captions"),
    "train": ("tag2text.hub.train_command", "train or fine-tune Tag2Text with the Trainer"),
    "evaluate": ("tag2text.hub.evaluate_command", "tagging, captioning and retrieval metrics of a model"),
    "quickstart": ("tag2text.hub.quickstart_command", "train a small model on built-in synthetic data"),
    "serve": ("tag2text.hub.serve_command", "web demo and HTTP API (dynamic batching) for a model"),
}


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block): ``PROG: error: MESSAGE``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = CliParser(prog="tag2text", description="Tag2Text command-line tools.", formatter_class=HelpFormatter)
    # Its own dest: after the subcommand, --log-level is TrainingArguments' (train), which must not replace it.
    parser.add_argument("--log-level", dest="cli_log_level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    parser.command_parsers = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name) if name == command else None
        parents = [module.parent_parser()] if hasattr(module, "parent_parser") else []
        sub_parser = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter,
                                    parents=parents)
        parser.command_parsers[name] = sub_parser
        if module is not None:
            module.add_arguments(sub_parser)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    # Imported here: these modules are light, but main() should not need them to print --help.
    from ..processing.clip_text import ClipLoadError
    from ..processing.source_check import TokenizerLoadError
    from ..training.arguments import TrainingArgumentError
    from .model_source import ModelSourceError

    return UsageError, TokenizerLoadError, ModelSourceError, TrainingArgumentError, ClipLoadError


def _unsupported_version(error: ImportError) -> bool:
    """Whether ``error`` is tag2text.version_compat's one-line UnsupportedVersionError (transformers or torch
    outside the supported range). Recognised by its class's name and module: the module raises it while being
    imported, so it cannot be imported here to name the class."""
    kind = type(error)
    return kind.__name__ == "UnsupportedVersionError" and kind.__module__.split(".")[-1] == "version_compat"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-") and a in COMMANDS), None)
    parser = build_parser(command)
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:  # named by the subcommand's parser, not the top-level one
            target = parser.command_parsers.get(args.command, parser)
            target.error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as stop:  # --help (0) or a bad option value, already printed as one line (2)
        return stop.code if isinstance(stop.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=args.cli_log_level, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except _user_errors() as error:
        message = " ".join(str(error).split())  # one line, whatever the message holds
        print(f"tag2text {args.command}: error: {message}", file=sys.stderr)
        return 2
    except ImportError as error:
        if not _unsupported_version(error):
            raise
        print(f"tag2text {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tag2text {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
