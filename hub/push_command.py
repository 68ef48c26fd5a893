"""``tag2text push``: upload a Tag2Text model directory to the Hugging Face Hub.

    tag2text push --model-dir out --repo-id you/tag2text-swin-b [--private] [--revision BRANCH]

The token comes from HF_TOKEN or ``hf auth login`` (never from the command line, where other users of the
machine could read it).
"""

from __future__ import annotations

import argparse
import logging
import sys

from .cli_args import UsageError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="directory written by save_pretrained / tag2text convert")
    parser.add_argument("--repo-id", required=True, help="NAME or OWNER/NAME of the model repo (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if needed; default main)")
    parser.add_argument("--commit-message", default=None, help="commit message (default: 'Upload Tag2Text model')")
    parser.add_argument("--no-model-card", action="store_true",
                        help="do not write a generated README.md when the directory has none")


def run(args) -> int:
    from ..processing.source_check import looks_like_hub_id
    from .upload import ModelDirectoryError, check_model_directory, push_model_directory

    if not looks_like_hub_id(args.repo_id, allow_bare_name=True):
        raise UsageError(f"--repo-id {args.repo_id}: expected NAME or OWNER/NAME")
    try:
        check_model_directory(args.model_dir)  # before any network call
    except ModelDirectoryError as error:
        raise UsageError(str(error)) from error
    try:
        url = push_model_directory(
            args.model_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            write_model_card=not args.no_model_card,
        )
    except (ModelDirectoryError, RuntimeError, ValueError, OSError) as error:
        print(f"tag2text push: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(f"pushed {args.model_dir} to {args.repo_id}: {url}")
    return 0
