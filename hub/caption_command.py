"""``tag2text caption``: tag and caption images with a Tag2Text model directory or Hub repo.

One JSON line per image: {"image", "tags", "tag_scores", "caption"}; an unreadable image gets a line with
"error" and the run goes on; the exit status is 1 if any image failed. Every option, the model source and
the input paths are checked before the model loads; a progress bar (images per second) runs on a terminal, and
a summary line (captioned, failed, seconds per image) ends the run on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .cli_args import (
    UsageError,
    check_device,
    device,
    existing_path,
    make_parent_folders,
    output_file,
    positive_int,
    probability,
)
from .annotation_run import add_sharded_arguments, run_sharded, wants_sharded_run

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or Hub repo id (owner/name)")
    # Optional here: --shards, --parquet or --dataset can replace them (the sharded run reports a missing input).
    parser.add_argument("images", nargs="*",
                        help="image files or directories (searched recursively); or --shards, --parquet, --dataset")
    parser.add_argument("--tags", default=None, help='steer every caption with these tags, e.g. "dog | grass"')
    parser.add_argument("--threshold", type=probability, default=None,
                        help="tagging threshold in [0, 1] for every class (default: the model's per-class values)")
    parser.add_argument("--num-beams", type=positive_int, default=None, help="beam width (default: the model's, 3)")
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="maximum caption length in tokens, [DEC] and prompt included (default: the model's)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="weights' dtype")
    parser.add_argument("--output", default=None,
                        help="write JSON lines here instead of standard output (default: standard output)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="onnx: --model is a `tag2text export` directory, run on onnxruntime (no torch)")
    add_sharded_arguments(parser)


def collect_images(inputs: list[str]) -> list[Path]:
    """Files as given, directories expanded to their image files in sorted order.

    Raises:
        UsageError: an input that does not exist, or no image at all.
    """
    found: list[Path] = []
    for item in inputs:
        existing_path(item, "images:")
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    if not found:
        raise UsageError("images: no image files (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ") in " + ", ".join(inputs))
    return found


def caption_batch(model, processor, images, tags=None, threshold=None, generate_kwargs=None):
    """Tags, tag scores and captions for a list of RGB PIL images (or anything the processor takes).

    One ``generate`` call runs the vision tower and the tagging head once per image and returns the tag
    probabilities with the captions; the reported tags are the predicted ones (also when ``tags`` steer).
    """
    import torch

    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
    steering = {"tags": [tags] * len(images), "tokenizer": processor.tokenizer} if tags else {}
    with torch.no_grad():
        outputs = model.generate(pixel_values, tag_threshold=threshold, output_tag_logits=True,
                                 return_dict_in_generate=True, **steering, **(generate_kwargs or {}))
    selected = model.select_tags(outputs["tag_logits"], threshold)
    probabilities = outputs["tag_probs"]
    captions = processor.decode_captions(outputs.sequences)
    results = []
    for index, caption in enumerate(captions):
        ids = selected[index]
        names = [model.config.tag_names[i] for i in ids]
        results.append(
            {
                "tags": list(outputs["tags"][index]),
                "tag_scores": {name: round(float(probabilities[index, i]), 6) for name, i in zip(names, ids)},
                "caption": caption,
            }
        )
    return results


def unknown_steering_tags(tags: str, separator: str, tokenizer) -> list[str]:
    """The names in ``--tags`` that the tokenizer spells with ``[UNK]`` (or with no token at all)."""
    names = [n.strip() for n in tags.split(separator.strip() or None)] if tags else []
    unknown = []
    for name in (n for n in names if n):
        ids = tokenizer.encode(name, add_special_tokens=False)
        if not ids or tokenizer.unk_token_id in ids:
            unknown.append(name)
    return unknown


def _check_options(args) -> tuple[str, list[Path]]:
    """Everything that can be checked without torch: the model source, the inputs and the output."""
    from .model_source import read_local_config, resolve_model_source

    source = resolve_model_source(args.model, "--model")
    paths = collect_images(args.images)
    if args.output is not None:
        output_file(args.output, "--output")
    config = read_local_config(source)
    if config is not None and args.max_length is not None:
        _check_max_length(args.max_length, len(config.get("prompt_token_ids") or []))
    return source, paths


def _check_max_length(max_length: int, prompt_tokens: int) -> None:
    # [DEC], the prompt, and at least one generated token.
    minimum = prompt_tokens + 2
    if max_length < minimum:
        raise UsageError(
            f"--max-length {max_length}: must be at least {minimum} for this model ([DEC] + {prompt_tokens} prompt "
            "tokens + 1 generated token)"
        )


def run(args) -> int:
    if getattr(args, "backend", "torch") == "onnx":
        from .onnx_caption import run as run_onnx

        return run_onnx(args)
    if wants_sharded_run(args):
        return run_sharded(args)
    source, paths = _check_options(args)
    check_device(args.device, "--device")

    import torch

    from tag2text.processing import ImageInputError, to_rgb_image

    from .model_source import load_model

    config, processor, warning = load_caption_setup(source, args)
    if warning:
        print(f"tag2text caption: warning: {warning}", file=sys.stderr)

    model = load_model(source, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    generate_kwargs = generation_options(args.num_beams, args.max_length, len(model.config.prompt_token_ids or []),
                                         model.generation_config.min_new_tokens)
    return write_captions(
        args, paths, lambda path: to_rgb_image(str(path)), ImageInputError,
        lambda images: caption_batch(model, processor, images, args.tags, args.threshold, generate_kwargs),
    )


def load_caption_setup(source, args):
    """(config, processor, unknown-steering-tags warning or None) of a model source, ``--max-length`` checked
    against its prompt: what every caption path (torch, sharded run) needs before it loads the weights."""
    from .model_source import load_config, load_processor

    config = load_config(source)
    if args.max_length is not None:
        _check_max_length(args.max_length, len(config.prompt_token_ids or []))
    processor = load_processor(source, prompt=config.prompt)
    return config, processor, unknown_steering_tags_warning(args.tags, config, processor.tokenizer)


def unknown_steering_tags_warning(tags, config, tokenizer) -> str | None:
    """The one warning for --tags the tokenizer spells with [UNK] (None when every tag is spelled)."""
    if not tags:
        return None
    unknown = unknown_steering_tags(tags, config.tag_separator, tokenizer)
    if not unknown:
        return None
    in_list = set(config.tag_names)
    described = ", ".join(f"{n!r}" + ("" if n in in_list else " (not in the tag list)") for n in unknown)
    return (f"--tags: the model's tokenizer spells {described} with [UNK]; the captions are steered by [UNK] in "
            "their place")


def generation_options(num_beams, max_length, prompt_length: int, min_new_tokens) -> dict:
    """generate() keywords from --num-beams / --max-length: one rule for every backend and the sharded run."""
    kwargs = {}
    if num_beams is not None:
        kwargs["num_beams"] = num_beams
    if max_length is not None:
        kwargs["max_length"] = max_length
        # The released minimum (10 tokens) counts [DEC] and the prompt, like max_length.
        kwargs["min_length"] = min(max_length, 1 + prompt_length + (min_new_tokens or 0))
    return kwargs


def write_captions(args, paths, read_image, image_error, caption_images, desc="captioning", backend="") -> int:
    """The caption loop shared by the backends: one JSON line per image (an "error" line for an image that
    ``read_image`` rejects with ``image_error``), a progress bar, and the closing summary line on stderr."""
    from tqdm.auto import tqdm

    if args.output:
        make_parent_folders(args.output)
    stream = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    failures = captioned = 0
    started = time.perf_counter()
    try:
        progress = tqdm(total=len(paths), desc=desc, unit="img", disable=None, file=sys.stderr)
        for start in range(0, len(paths), args.batch_size):
            batch_paths = paths[start : start + args.batch_size]
            images, good = [], []
            for path in batch_paths:
                try:
                    images.append(read_image(path))
                    good.append(path)
                except image_error as error:
                    failures += 1
                    progress.write(f"tag2text caption: skipping {path}: {error}", file=sys.stderr)
                    stream.write(json.dumps({"image": str(path), "error": str(error)}) + "\n")
            if images:
                for path, result in zip(good, caption_images(images)):
                    stream.write(json.dumps({"image": str(path), **result}) + "\n")
                    captioned += 1
            stream.flush()
            progress.update(len(batch_paths))
        progress.close()
    finally:
        if stream is not sys.stdout:
            stream.close()
    seconds = time.perf_counter() - started
    per_image = seconds / captioned if captioned else float("nan")
    where = f" into {os.fspath(args.output)}" if args.output else ""
    print(f"tag2text caption: captioned {captioned}, failed {failures} of {len(paths)} images{where} in "
          f"{seconds:.1f} s ({per_image:.3f} s per image{backend})", file=sys.stderr)
    return 1 if failures else 0
