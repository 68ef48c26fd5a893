"""``tag2text evaluate``: tagging, captioning and retrieval metrics of a model on a dataset.

Example::

    tag2text evaluate --model runs/t2t --data-dir data/val --output metrics.json

The data takes the training layouts (imagefolder ``metadata.jsonl``, original annotation JSON with
``--image-root``, webdataset shards). Tags missing from the data are mined from the captions with the model's
tag list. ``metrics.json`` holds the metrics (see :mod:`tag2text.training.scoring` for the names) and, with
``--predictions``, a second file gets each image's predicted tags and caption.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .cli_args import (
    UsageError,
    check_device,
    device,
    make_parent_folders,
    non_negative_int,
    output_file,
    positive_int,
)

TASKS = ("tagging", "captioning", "retrieval")

logger = logging.getLogger(__name__)


def _tasks(text: str) -> list[str]:
    import argparse

    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(TASKS)}, got {text!r}")
    return tasks


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="trained model directory or Hub id (with its processor)")
    parser.add_argument("--data-dir", required=True, help="evaluation data (any training layout)")
    parser.add_argument("--output", default="metrics.json", help="where the metrics go (JSON)")
    parser.add_argument("--predictions", default=None, help="also write per-image tags and captions here (JSON)")
    parser.add_argument("--image-root", default=None, help="image folder of an annotation .json")
    parser.add_argument("--tasks", type=_tasks, default=None,
                        help=f"comma-separated subset of {','.join(TASKS)} (default: all of them; tagging for a RAM "
                             "or RAM++ model, which writes no captions)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    parser.add_argument("--max-samples", type=positive_int, default=None, help="evaluate the first N images only")
    parser.add_argument("--num-beams", type=positive_int, default=None, help="caption beams (default: the model's)")
    parser.add_argument("--itm-rerank-k", type=non_negative_int, default=16,
                        help="retrieval candidates re-ranked by ITM (0: ITC only)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java and ~15 s)")
    parser.add_argument("--device", type=device, default=None,
                        help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    parser.add_argument("--fail-on-bad-image", action="store_true",
                        help="stop at the first unreadable image instead of skipping it")


def _check_options(args) -> str:
    from .model_source import resolve_model_source

    source = resolve_model_source(args.model, "--model")
    text = os.fspath(args.data_dir)
    if not any(ch in text for ch in "{*?") and not os.path.exists(text):
        raise UsageError(f"--data-dir {text}: no such data directory, annotation .json or .tar shard")
    if args.image_root is not None and not os.path.isdir(args.image_root):
        raise UsageError(f"--image-root {args.image_root}: no such directory")
    output_file(args.output, "--output")
    if args.predictions is not None:
        output_file(args.predictions, "--predictions")
    check_device(args.device, "--device")
    return source


def run(args) -> int:
    source = _check_options(args)
    import torch

    from .model_source import (
        load_config,
        load_image_processor,
        load_model,
        load_processor,
        load_tagging_config,
        model_type,
        tagging_only_family,
    )
    from ..training.data import DataFormatError, TagResolver, detect_format, load_dataset
    from ..training.evaluation import Tag2TextEvaluator
    from ..training.images import BadImageError, ImageLoader
    from ..training.tag_mining import TagList
    from ..training.webdataset import load_webdataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tasks = args.tasks if isinstance(args.tasks, list) or args.tasks is None else _tasks(args.tasks)
    family = tagging_only_family(model_type(source))
    if family is not None:  # RAM / RAM++: tags only, with their per-class thresholds
        untaggable = [task for task in tasks or () if task != "tagging"]
        if untaggable:
            raise UsageError(f"--tasks {','.join(tasks)}: {args.model} is a {family} model, which writes no "
                             "captions and has no retrieval heads; use --tasks tagging")
        tasks = ["tagging"]
        config = load_tagging_config(source)
        processor = load_image_processor(source)
    else:
        tasks = tasks or list(TASKS)
        config = load_config(source)
        processor = load_processor(source, prompt=config.prompt)
    resolver = TagResolver(TagList(list(config.tag_names)))
    try:
        # The data first: a bad data directory is reported before the model loads.
        if detect_format(args.data_dir) == "webdataset":
            data = load_webdataset(args.data_dir, resolver, shuffle=False, fail_fast=args.fail_on_bad_image)
        else:
            data = load_dataset(args.data_dir, resolver, image_root=args.image_root, fail_fast=args.fail_on_bad_image)
    except (DataFormatError, FileNotFoundError) as error:
        raise UsageError(f"--data-dir {args.data_dir}: {error}") from error
    model = load_model(source).to(device).eval()
    try:
        evaluator = Tag2TextEvaluator(
            processor,
            batch_size=args.batch_size,
            max_samples=args.max_samples,
            tasks=tasks,
            generate_kwargs={"num_beams": args.num_beams} if args.num_beams else {},
            itm_rerank_k=args.itm_rerank_k,
            meteor=False if args.no_meteor else None,
            image_loader=ImageLoader(fail_fast=args.fail_on_bad_image),
        )
        result = evaluator.evaluate(model, data)
    except (DataFormatError, BadImageError, OSError) as error:
        logger.error("%s", error)
        return 1
    output = Path(args.output)
    payload = {"model": args.model, "data": args.data_dir, "metrics": result.metrics}
    make_parent_folders(output)
    output.write_text(json.dumps(payload, indent=2))
    if args.predictions:
        make_parent_folders(args.predictions)
        Path(args.predictions).write_text(json.dumps(result.predictions, indent=2))
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.scalars().items()}
    logger.info("metrics of %d images written to %s: %s", result.metrics["num_images"], output, shown)
    return 0
