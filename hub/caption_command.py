"""``tag2text caption``: tag and caption images with a Tag2Text model directory or Hub repo.

One JSON line per image: {"image", "tags", "tag_scores", "caption"}; an unreadable image gets a line with
"error" and the run goes on; the exit status is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .annotation_run import add_sharded_arguments, run_sharded, wants_sharded_run

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or Hub repo id")
    parser.add_argument("images", nargs="+", help="image files or directories (searched recursively)")
    parser.add_argument("--tags", default=None, help='steer every caption with these tags, e.g. "dog | grass"')
    parser.add_argument("--threshold", type=float, default=None, help="tagging threshold for every class")
    parser.add_argument("--num-beams", type=int, default=None, help="beam width (model default: 3)")
    parser.add_argument("--max-length", type=int, default=None, help="maximum caption length in tokens, prompt included")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--output", default=None, help="write JSON lines here instead of standard output")
    add_sharded_arguments(parser)


def collect_images(inputs: list[str]) -> list[Path]:
    """Files as given, directories expanded to their image files in sorted order; missing paths kept so
    that they are reported as errors in the output."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def caption_batch(model, processor, images, tags=None, threshold=None, generate_kwargs=None):
    """Tags, tag scores and captions for a list of RGB PIL images (or anything the processor takes)."""
    import torch

    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
    with torch.no_grad():
        tag_results = model.tag(pixel_values, threshold=threshold)
        outputs = model.generate(
            pixel_values,
            tags=[tags] * len(images) if tags else None,
            tag_threshold=threshold,
            tokenizer=processor.tokenizer,
            return_dict_in_generate=True,
            **(generate_kwargs or {}),
        )
    captions = processor.decode_captions(outputs.sequences)
    results = []
    for index, caption in enumerate(captions):
        tagged = tag_results[index]
        results.append(
            {
                "tags": list(outputs["tags"][index]) if outputs["tags"] is not None else tagged.tags,
                "tag_scores": {name: round(score, 6) for name, score in zip(tagged.tags, tagged.scores)},
                "caption": caption,
            }
        )
    return results


def run(args) -> int:
    if wants_sharded_run(args):
        return run_sharded(args)
    import torch
    from tqdm.auto import tqdm

    import tag2text  # noqa: F401  (registers the Auto classes)
    from tag2text import Tag2TextForCaptioning, Tag2TextProcessor
    from tag2text.processing import ImageInputError, to_rgb_image

    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be at least 1, got {args.batch_size}")
    dtype = getattr(torch, args.dtype)
    model = Tag2TextForCaptioning.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
    processor = Tag2TextProcessor.from_pretrained(args.model)
    generate_kwargs = {}
    if args.num_beams is not None:
        generate_kwargs["num_beams"] = args.num_beams
    if args.max_length is not None:
        generate_kwargs["max_length"] = args.max_length
        # The released minimum (10 tokens) counts [DEC] and the prompt, like max_length.
        prompt_tokens = 1 + len(model.config.prompt_token_ids or [])
        generate_kwargs["min_length"] = min(args.max_length, prompt_tokens + (model.generation_config.min_new_tokens or 0))

    paths = collect_images(args.images)
    if not paths:
        raise SystemExit("no images found in: " + ", ".join(args.images))
    stream = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    failures = 0
    try:
        progress = tqdm(total=len(paths), desc="captioning", unit="img", disable=None)
        for start in range(0, len(paths), args.batch_size):
            batch_paths = paths[start : start + args.batch_size]
            images, good = [], []
            for path in batch_paths:
                try:
                    images.append(to_rgb_image(str(path)))
                    good.append(path)
                except ImageInputError as error:
                    failures += 1
                    logger.warning("skipping %s: %s", path, error)
                    stream.write(json.dumps({"image": str(path), "error": str(error)}) + "\n")
            if images:
                for path, result in zip(good, caption_batch(model, processor, images, args.tags, args.threshold,
                                                            generate_kwargs)):
                    stream.write(json.dumps({"image": str(path), **result}) + "\n")
            stream.flush()
            progress.update(len(batch_paths))
        progress.close()
    finally:
        if stream is not sys.stdout:
            stream.close()
    if failures:
        logger.error("%d of %d images could not be read", failures, len(paths))
        return 1
    return 0
