"""``tag2text caption --backend onnx``: the caption command on an ONNX export (tag2text.onnx, no torch).

Same JSON lines as the torch backend ({"image", "tags", "tag_scores", "caption"}; "error" for an unreadable
image, exit status 1 if any failed), computed by :class:`tag2text.onnx.OnnxTag2Text`.
"""

from __future__ import annotations

import json
import sys

from .caption_command import collect_images
from .cli_args import UsageError


def caption_batch(model, images, tags=None, threshold=None, generate_kwargs=None):
    """Tags, tag scores and captions of a list of RGB PIL images, as caption_command.caption_batch."""
    pixel_values = model.preprocess(images)
    tag_results = model.tag(pixel_values=pixel_values, threshold=threshold)
    outputs = model.generate(pixel_values=pixel_values, tags=[tags] * len(images) if tags else None,
                             tag_threshold=threshold, return_dict=True, **(generate_kwargs or {}))
    captions = model.decode_captions(outputs["sequences"])
    results = []
    for index, caption in enumerate(captions):
        tagged = tag_results[index]
        results.append({
            "tags": list(outputs["tags"][index]) if outputs["tags"] is not None else tagged.tags,
            "tag_scores": {name: round(score, 6) for name, score in zip(tagged.tags, tagged.scores)},
            "caption": caption,
        })
    return results


def run(args) -> int:
    import os
    import time

    from tqdm.auto import tqdm

    from tag2text.onnx import OnnxModelError, OnnxTag2Text, load_rgb_image

    from .caption_command import _check_max_length
    from .cli_args import output_file

    if args.dtype != "float32":
        raise UsageError(f"--dtype {args.dtype}: not available with --backend onnx (export with --quantize int8)")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise UsageError(f"--device {args.device}: --backend onnx runs on cpu or cuda")
    paths = collect_images(args.images)
    if args.output is not None:
        output_file(args.output, "--output")
    providers = ["CPUExecutionProvider"]
    if args.device != "cpu":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise UsageError(f"--device {args.device}: this onnxruntime has no CUDA provider; use --device cpu")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args.device.partition(":")[2] or 0)}))
    try:
        model = OnnxTag2Text.from_pretrained(args.model, providers=providers)
    except OnnxModelError as error:
        raise UsageError(f"--model {args.model}: {error}") from error
    generate_kwargs = {}
    if args.num_beams is not None:
        generate_kwargs["num_beams"] = args.num_beams
    if args.max_length is not None:
        _check_max_length(args.max_length, len(model.manifest["prompt_token_ids"]))
        generate_kwargs["max_length"] = args.max_length
        # The released minimum (10 tokens) counts [DEC] and the prompt, like max_length.
        prompt_tokens = 1 + len(model.manifest["prompt_token_ids"])
        minimum = model.generation_config.get("min_new_tokens") or 0
        generate_kwargs["min_length"] = min(args.max_length, prompt_tokens + minimum)

    stream = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    failures = captioned = 0
    started = time.perf_counter()
    try:
        progress = tqdm(total=len(paths), desc="captioning (onnx)", unit="img", disable=None, file=sys.stderr)
        for start in range(0, len(paths), args.batch_size):
            batch_paths = paths[start: start + args.batch_size]
            images, good = [], []
            for path in batch_paths:
                try:
                    images.append(load_rgb_image(str(path)))
                    good.append(path)
                except OnnxModelError as error:
                    failures += 1
                    progress.write(f"tag2text caption: skipping {path}: {error}", file=sys.stderr)
                    stream.write(json.dumps({"image": str(path), "error": str(error)}) + "\n")
            if images:
                for path, result in zip(good, caption_batch(model, images, args.tags, args.threshold,
                                                            generate_kwargs)):
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
          f"{seconds:.1f} s ({per_image:.3f} s per image, onnxruntime)", file=sys.stderr)
    return 1 if failures else 0
