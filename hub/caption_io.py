"""What the paths of ``tag2text caption`` share (torch, ``--backend onnx``, the sharded run): the image inputs,
the option checks against the model, and the loop that writes one JSON line per image.

Below :mod:`.caption_command`, :mod:`.onnx_caption` and :mod:`.annotation_run`, so that they import it and not
each other.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .cli_args import UsageError, existing_path, make_parent_folders

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


def check_max_length(max_length: int, prompt_tokens: int) -> None:
    """``--max-length`` leaves room for [DEC], the prompt, and at least one generated token."""
    minimum = prompt_tokens + 2
    if max_length < minimum:
        raise UsageError(
            f"--max-length {max_length}: must be at least {minimum} for this model ([DEC] + {prompt_tokens} prompt "
            "tokens + 1 generated token)"
        )


# Options that only steer or shape a caption, and why a tagging-only model cannot take them.
CAPTION_ONLY_OPTIONS = (
    ("tags", "--tags", "steering tags shape a caption"),
    ("num_beams", "--num-beams", "beams search for a caption"),
    ("max_length", "--max-length", "it limits a caption's length"),
)


def check_tagging_only_options(args, model_type_name) -> None:
    """A tagging-only model (RAM, RAM++) writes no caption: refuse the caption options, naming the first given."""
    from .model_source import tagging_only_family

    family = tagging_only_family(model_type_name)
    if family is None:
        return
    for name, option, why in CAPTION_ONLY_OPTIONS:
        if getattr(args, name, None) is not None:
            raise UsageError(f"{option}: {args.model} is a {family} model, which only tags images (no caption "
                             f"decoder), and {why}; leave {option} out")


def load_caption_setup(source, args):
    """(config, processor, unknown-steering-tags warning or None) of a model source, ``--max-length`` checked
    against its prompt: what every PyTorch caption path (plain, sharded) needs before it loads the weights.
    A tagging-only model (RAM, RAM++) gets its config and image processor (and the caption options refused)."""
    from .model_source import (load_config, load_image_processor, load_processor, load_tagging_config, model_type,
                               tagging_only_family)

    kind = model_type(source)
    if tagging_only_family(kind):
        check_tagging_only_options(args, kind)
        return load_tagging_config(source), load_image_processor(source), None
    config = load_config(source)
    if args.max_length is not None:
        check_max_length(args.max_length, len(config.prompt_token_ids or []))
    processor = load_processor(source, prompt=config.prompt)
    return config, processor, unknown_steering_tags_warning(args.tags, config, processor.tokenizer)


def unknown_steering_tags_warning(tags, config, tokenizer) -> str | None:
    """The one warning for --tags the tokenizer spells with [UNK] (None when every tag is spelled)."""
    from .inference import unknown_steering_tags

    if not tags:
        return None
    unknown = unknown_steering_tags(tags, config.tag_separator, tokenizer)
    if not unknown:
        return None
    in_list = set(config.tag_names)
    described = ", ".join(f"{n!r}" + ("" if n in in_list else " (not in the tag list)") for n in unknown)
    return (f"--tags: the model's tokenizer spells {described} with [UNK]; the captions are steered by [UNK] in "
            "their place")


def caption_rows(backend, pixel_values, args) -> list[dict]:
    """The rows of a batch on either backend (:mod:`.inference`), with the command's --tags, --threshold,
    --num-beams and --max-length for every image (a tagging-only backend: its tag rows with --threshold)."""
    from .inference import generation_options

    count = len(pixel_values)
    if not getattr(backend, "writes_captions", True):
        return backend.tag(pixel_values, thresholds=[args.threshold] * count)
    return backend.tag_and_caption(pixel_values, tags=[args.tags] * count if args.tags else None,
                                   thresholds=[args.threshold] * count,
                                   **generation_options(backend, args.num_beams, args.max_length))


def write_captions(args, paths, backend, desc="captioning", label="") -> int:
    """The caption loop shared by the backends: one JSON line per image (an "error" line for an image that
    cannot be read), a progress bar, and the closing summary line on stderr."""
    from tqdm.auto import tqdm

    # numpy and PIL only: the onnx backend runs without torch.
    from ..image_loading import ImageInputError, to_rgb_image

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
                    images.append(to_rgb_image(str(path)))
                    good.append(path)
                except ImageInputError as error:
                    failures += 1
                    progress.write(f"tag2text caption: skipping {path}: {error}", file=sys.stderr)
                    stream.write(json.dumps({"image": str(path), "error": str(error)}) + "\n")
            if images:
                for path, result in zip(good, caption_rows(backend, backend.pixel_values(images), args)):
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
          f"{seconds:.1f} s ({per_image:.3f} s per image{label})", file=sys.stderr)
    return 1 if failures else 0
