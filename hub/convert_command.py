"""``tag2text convert``: turn an original Tag2Text, RAM or RAM++ checkpoint into a transformers model directory.

    tag2text convert --checkpoint tag2text_swin_14m.pth --tag-list tag_list.txt --output-dir out
    tag2text convert --checkpoint ram_plus_swin_large_14m.pth --tag-list ram_tag_list.txt \
        --tag-list-chinese ram_tag_list_chinese.txt --threshold-file ram_tag_list_threshold.txt --output-dir out

The model is recognised from the checkpoint's keys.

Every default is the released model's value; the three config options take the original project's own JSON
files (config_swinB_384.json, med_config.json, q2l_config.json formats).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .cli_args import UsageError, existing_file, output_directory, probability

logger = logging.getLogger(__name__)


def _class_threshold(text: str) -> tuple[int, float]:
    index, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        index, value = int(index), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX=VALUE (e.g. 2701=0.7), got {text!r}") from None
    if index < 0 or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected an INDEX of at least 0 and a VALUE in [0, 1], got {text!r}")
    return index, value


def _tag_index(text: str) -> int:
    try:
        index = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a tag index, got {text!r}") from None
    if index < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="original .pth file; default: download tag2text_swin_14m.pth from the Hub Space "
                             "the original README links")
    parser.add_argument("--output-dir", required=True, help="directory to write the converted model to")
    parser.add_argument("--tag-list", default=None,
                        help="tag list the model was built with, one tag per line (default: download the "
                             "released 3,429-tag list, or RAM's 4,585-tag list with its Chinese names and thresholds)")
    parser.add_argument("--tag-list-chinese", default=None,
                        help="RAM/RAM++: Chinese tag names, one per line (as ram_tag_list_chinese.txt)")
    parser.add_argument("--threshold-file", default=None,
                        help="RAM/RAM++: per-class thresholds, one per line (as ram_tag_list_threshold.txt); "
                             "without it every class gets --threshold")
    parser.add_argument("--vision-config", default=None, help="original Swin config JSON (default: config_swinB_384)")
    parser.add_argument("--med-config", default=None, help="original med_config.json (default: the released one)")
    parser.add_argument("--q2l-config", default=None, help="original q2l_config.json (default: the released one)")
    parser.add_argument("--threshold", type=probability, default=0.68, help="tag threshold in [0, 1] for every class")
    parser.add_argument("--class-threshold", type=_class_threshold, nargs="*", default=None, metavar="INDEX=VALUE",
                        help="per-class thresholds, replacing the released 2701=0.7 2828=0.7 1167=0.7 "
                             "(give the option with no values for none)")
    parser.add_argument("--delete-tag-index", type=_tag_index, nargs="*", default=None, metavar="INDEX",
                        help="tags left out of the caption prompt, replacing the released seven "
                             "(127 2961 3351 3265 3338 3355 3359; give the option with no values for none)")
    parser.add_argument("--tokenizer", default=None,
                        help="bert-base-uncased (Hub; the default for Tag2Text), or a directory or file with its "
                             "vocab.txt (offline); RAM/RAM++ need none (given, RAM's is checked against it)")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="upload the result to this repo")
    parser.add_argument("--private", action="store_true", help="create the pushed repo as private")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache for the checkpoint download")


def _check_options(args) -> None:
    output_directory(args.output_dir, "--output-dir")
    for option in ("checkpoint", "tag_list", "tag_list_chinese", "threshold_file", "vision_config", "med_config",
                   "q2l_config"):
        value = getattr(args, option)
        if value is not None:
            existing_file(value, "--" + option.replace("_", "-"))
    if args.push_to_hub is not None:
        from ..processing.source_check import looks_like_hub_id

        if not looks_like_hub_id(args.push_to_hub, allow_bare_name=True):
            raise UsageError(f"--push-to-hub {args.push_to_hub}: expected NAME or OWNER/NAME")
    if args.cache_dir is not None and os.path.exists(args.cache_dir) and not os.path.isdir(args.cache_dir):
        raise UsageError(f"--cache-dir {args.cache_dir}: is a file, not a directory")


def _detected_family(args):
    """``(family, state dict)`` of the checkpoint (None, None without one: the released Tag2Text is downloaded)."""
    if args.checkpoint is None:
        return None, None
    from .conversion import load_original_checkpoint
    from .ram_checkpoint_mapping import detect_family

    original = load_original_checkpoint(args.checkpoint)
    return detect_family(original, args.checkpoint), original


def _run_ram(args, family, original) -> int:
    from tag2text import build_tokenizer

    from .ram_checkpoint_mapping import FAMILY_NAMES
    from .ram_conversion import convert_ram_checkpoint

    for option in ("delete_tag_index", "class_threshold"):
        if getattr(args, option) is not None:
            raise UsageError(f"--{option.replace('_', '-')} is a Tag2Text option; {FAMILY_NAMES[family]} takes "
                             "--threshold-file")
    tokenizer = None if args.tokenizer is None else build_tokenizer(args.tokenizer, option="--tokenizer")
    report = convert_ram_checkpoint(
        args.output_dir, original, args.checkpoint, family, tag_list=args.tag_list,
        tag_list_chinese=args.tag_list_chinese, threshold_file=args.threshold_file, threshold=args.threshold,
        vision_config=args.vision_config, med_config=args.med_config, q2l_config=args.q2l_config,
        tokenizer=tokenizer)
    rows = f", {report.descriptions_per_tag} descriptions per tag" if report.descriptions_per_tag else ""
    print(f"converted {report.checkpoint} ({FAMILY_NAMES[family]}: {report.num_tensors} tensors, {report.num_tags} "
          f"tags{rows}) into {report.output_dir}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    return 0


def run(args) -> int:
    _check_options(args)
    from tag2text import build_tokenizer

    from .checkpoint_mapping import CheckpointConversionError
    from .conversion import CheckpointDownloadError
    from .original_config import OriginalConfigError

    try:
        family, original = _detected_family(args)
        if family in ("ram", "ram_plus"):
            return _run_ram(args, family, original)
    except (CheckpointConversionError, OriginalConfigError) as error:  # bad input: one line, nothing written
        print(f"tag2text convert: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except CheckpointDownloadError as error:
        print(f"tag2text convert: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    del original  # Tag2Text reads the file itself
    for option in ("tag_list_chinese", "threshold_file"):
        if getattr(args, option) is not None:
            raise UsageError(f"--{option.replace('_', '-')} is a RAM/RAM++ option; {args.checkpoint} holds Tag2Text")
    if args.tokenizer is None:
        args.tokenizer = "bert-base-uncased"

    # Before the checkpoint is read: offline, transformers returns a special-tokens-only bert-base-uncased
    # instead of raising, which would surface later as a vocabulary-size mismatch.
    build_tokenizer(args.tokenizer, option="--tokenizer")

    from .conversion import convert_checkpoint

    class_thresholds = None if args.class_threshold is None else dict(args.class_threshold)
    try:
        report = convert_checkpoint(
            args.output_dir,
            checkpoint=args.checkpoint,
            tag_list=args.tag_list,
            vision_config=args.vision_config,
            med_config=args.med_config,
            q2l_config=args.q2l_config,
            threshold=args.threshold,
            class_thresholds=class_thresholds,
            delete_tag_index=args.delete_tag_index,
            tokenizer=args.tokenizer,
            push_to_hub=args.push_to_hub,
            private=args.private,
            cache_dir=args.cache_dir,
        )
    except (CheckpointConversionError, OriginalConfigError, CheckpointDownloadError, FileNotFoundError,
            NotADirectoryError) as error:
        print(f"tag2text convert: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(f"converted {report.checkpoint} ({report.num_tensors} tensors, {report.num_tags} tags) into "
          f"{report.output_dir}")
    if report.new_keys:
        print("initialised fresh (not in the original): " + ", ".join(report.new_keys))
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.pushed_to:
        print(f"pushed: {report.pushed_to}")
    return 0
