"""``tag2text score-captions``: score a caption result file as the COCO caption toolkit does.

    tag2text score-captions --references captions_val2014.json --predictions results.json \\
        [--output scores.json] [--tokenizer auto|java|python] [--no-meteor]

Reads COCO annotation/result files or JSON Lines (see :mod:`tag2text.training.metrics.caption_io`), prints a table of
corpus scores and writes ``{"corpus": {...}, "per_image": {IMAGE_ID: {...}}, "info": {...}}``
with the toolkit's metric names (METEOR is null without Java).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .cli_args import existing_file, make_parent_folders, output_file

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--references", required=True, type=Path, help="COCO annotation file or JSONL of references")
    parser.add_argument("--predictions", required=True, type=Path, help="COCO result file or JSONL of predictions")
    parser.add_argument("--output", type=Path, default=None,
                        help="write corpus and per-image scores as JSON here (missing folders are created)")
    parser.add_argument(
        "--tokenizer",
        choices=["auto", "java", "python"],
        default="auto",
        help="PTB tokenizer: the toolkit's Java one, ours (same output, written from the Java one's observed behaviour), or auto (Java if present)",
    )
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (a Java program, ~15 s)")


def format_table(scores: dict) -> str:
    """The corpus scores as a two-column text table (x100, as papers print them)."""
    from ..training.metrics.caption_metrics import METRIC_NAMES

    lines = [f"{'metric':<8} {'x100':>7}", f"{'-' * 8} {'-' * 7}"]
    for name in METRIC_NAMES:
        value = scores["corpus"].get(name)
        lines.append(f"{name:<8} {'n/a' if value is None else format(100 * value, '.2f'):>7}")
    info = scores["info"]
    lines.append(
        f"{info['num_images']} images, {info['num_references']} references, tokenizer: {info['tokenizer']}, "
        f"METEOR: {info['meteor']}"
    )
    notes = [
        f"{info[key]} {label}"
        for key, label in (
            ("images_without_prediction", "images without prediction (not scored)"),
            ("empty_predictions", "empty predictions (scored 0)"),
            ("empty_references_dropped", "empty references dropped"),
        )
        if info.get(key)
    ]
    if notes:
        lines.append("; ".join(notes))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    existing_file(args.references, "--references")
    existing_file(args.predictions, "--predictions")
    if args.output is not None:
        output_file(args.output, "--output")
    from ..training.metrics.caption_io import read_predictions, read_references, resolve_prediction_ids
    from ..training.metrics.caption_metrics import CaptionInputError, compute_caption_metrics

    try:
        references, aliases = read_references(args.references)
        predictions = read_predictions(args.predictions)
        predictions, renamed = resolve_prediction_ids(predictions, references, aliases)
        if renamed:
            logger.info("matched %d prediction(s) to images by file name", renamed)
        scores = compute_caption_metrics(
            references, predictions, tokenizer=args.tokenizer, meteor=False if args.no_meteor else None
        )
    except (CaptionInputError, OSError, RuntimeError) as exc:
        logger.error("%s", exc)
        return 1
    scores["info"]["matched_by_file_name"] = renamed
    print(format_table(scores))
    if args.output is not None:
        make_parent_folders(args.output)
        args.output.write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
        logger.info("wrote %s", args.output)
    return 0
