"""``tag2text evaluate``: tagging, captioning and retrieval metrics of a model on a dataset.

Example::

    tag2text evaluate --model runs/t2t --data-dir data/val --output metrics.json

The data takes the training layouts (imagefolder ``metadata.jsonl``, original annotation JSON with
``--image-root``, webdataset shards). Tags missing from the data are mined from the captions with the model's
tag list. ``metrics.json`` holds the metrics (see :mod:`.scoring` for the names) and, with
``--predictions``, a second file gets each image's predicted tags and caption.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="trained model directory or Hub id (with its processor)")
    parser.add_argument("--data-dir", required=True, help="evaluation data (any training layout)")
    parser.add_argument("--output", default="metrics.json", help="where the metrics go (JSON)")
    parser.add_argument("--predictions", default=None, help="also write per-image tags and captions here (JSON)")
    parser.add_argument("--image-root", default=None, help="image folder of an annotation .json")
    parser.add_argument("--tasks", default="tagging,captioning,retrieval", help="comma-separated subset")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--num-beams", type=int, default=None, help="caption beams (default: the model's)")
    parser.add_argument("--itm-rerank-k", type=int, default=16, help="retrieval candidates re-ranked by ITM")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java and ~15 s)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--fail-on-bad-image", action="store_true",
                        help="stop at the first unreadable image instead of skipping it")


def run(args) -> int:
    import torch

    from .. import Tag2TextForCaptioning, Tag2TextProcessor
    from .data import DataFormatError, TagResolver, detect_format, load_dataset
    from .evaluation import Tag2TextEvaluator
    from .images import BadImageError, ImageLoader
    from .tag_mining import TagList
    from .webdataset import load_webdataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = Tag2TextForCaptioning.from_pretrained(args.model).to(device).eval()
        processor = Tag2TextProcessor.from_pretrained(args.model)
        resolver = TagResolver(TagList(list(model.config.tag_names)))
        if detect_format(args.data_dir) == "webdataset":
            data = load_webdataset(args.data_dir, resolver, shuffle=False, fail_fast=args.fail_on_bad_image)
        else:
            data = load_dataset(args.data_dir, resolver, image_root=args.image_root, fail_fast=args.fail_on_bad_image)
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
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
    except (DataFormatError, BadImageError, FileNotFoundError, OSError) as error:
        logger.error("%s", error)
        return 2
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model, "data": args.data_dir, "metrics": result.metrics}
    output.write_text(json.dumps(payload, indent=2))
    if args.predictions:
        Path(args.predictions).write_text(json.dumps(result.predictions, indent=2))
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.scalars().items()}
    logger.info("metrics of %d images written to %s: %s", result.metrics["num_images"], output, shown)
    return 0
