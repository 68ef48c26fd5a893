"""``tag2text caption``: tag and caption images with a Tag2Text model directory or Hub repo.

One JSON line per image: {"image", "tags", "tag_scores", "caption"}; a tagging-only RAM / RAM++ model writes
{"image", "tags", "tags_zh", "tag_scores"} with its per-class thresholds (--tags, --num-beams and --max-length
are refused for it). An unreadable image gets a line with "error" and the run goes on; the exit status is 1 if
any image failed. Every option, the model source and the input paths are checked before the model loads; a
progress bar (images per second) runs on a terminal, and a summary line (captioned, failed, seconds per image)
ends the run on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .annotation_run import add_sharded_arguments, run_sharded, wants_sharded_run
from .caption_io import (check_max_length, check_tagging_only_options, collect_images, load_caption_setup,
                         write_captions)
from .cli_args import check_device, device, output_file, positive_int, probability

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or Hub repo id (owner/name)")
    # Optional here: --shards, --parquet or --dataset can replace them (the sharded run reports a missing input).
    parser.add_argument("images", nargs="*",
                        help="image files or directories (searched recursively); or --shards, --parquet, --dataset")
    parser.add_argument("--tags", default=None, help='steer every caption with these tags, e.g. "dog | grass" (Tag2Text)')
    parser.add_argument("--threshold", type=probability, default=None,
                        help="tagging threshold in [0, 1] for every class (default: the model's per-class values)")
    parser.add_argument("--num-beams", type=positive_int, default=None, help="beam width (default: the model's, 3; Tag2Text)")
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="maximum caption length in tokens, [DEC] and prompt included (default: the model's; "
                        "Tag2Text)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="weights' dtype")
    parser.add_argument("--output", default=None,
                        help="write JSON lines here instead of standard output (default: standard output)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="onnx: --model is a `tag2text export` directory, run on onnxruntime (no torch)")
    add_sharded_arguments(parser)


def _check_options(args) -> tuple[str, list[Path]]:
    """Everything that can be checked without torch: the model source, the inputs and the output."""
    from .model_source import read_local_config, resolve_model_source

    source = resolve_model_source(args.model, "--model")
    paths = collect_images(args.images)
    if args.output is not None:
        output_file(args.output, "--output")
    config = read_local_config(source)
    if config is not None:
        check_tagging_only_options(args, config.get("model_type"))
    if config is not None and args.max_length is not None:
        check_max_length(args.max_length, len(config.get("prompt_token_ids") or []))
    return source, paths


def run(args) -> int:
    if getattr(args, "backend", "torch") == "onnx":
        from .onnx_caption import run as run_onnx

        return run_onnx(args)
    if wants_sharded_run(args):
        return run_sharded(args)
    source, paths = _check_options(args)
    check_device(args.device, "--device")

    import torch

    from .inference import torch_backend
    from .model_source import load_model

    config, processor, warning = load_caption_setup(source, args)
    if warning:
        print(f"tag2text caption: warning: {warning}", file=sys.stderr)

    model = load_model(source, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    return write_captions(args, paths, torch_backend(model, processor))
