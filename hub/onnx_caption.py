"""``tag2text caption --backend onnx``: the caption command on an ONNX export (tag2text.onnx, no torch).

Same JSON lines as the torch backend ({"image", "tags", "tag_scores", "caption"}; "error" for an unreadable
image, exit status 1 if any failed), computed by :class:`tag2text.onnx.OnnxTag2Text`.
"""

from __future__ import annotations

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
    from tag2text.onnx import ImageInputError, OnnxModelError, OnnxTag2Text, to_rgb_image

    from .caption_command import _check_max_length, generation_options, write_captions
    from .cli_args import output_file

    sharded = [f"--{name.replace('_', '-')}" for name in ("output_dir", "shards", "parquet", "dataset")
               if getattr(args, name, None)]
    if not args.images:
        raise UsageError("--backend onnx: give image files or directories")
    if sharded:
        raise UsageError(f"{sharded[0]}: the sharded dataset options need --backend torch (--backend onnx "
                         "captions image files)")
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
    prompt_length = len(model.manifest["prompt_token_ids"])
    if args.max_length is not None:
        _check_max_length(args.max_length, prompt_length)
    generate_kwargs = generation_options(args.num_beams, args.max_length, prompt_length,
                                         model.generation_config.get("min_new_tokens"))
    return write_captions(
        args, paths, lambda path: to_rgb_image(str(path)), ImageInputError,
        lambda images: caption_batch(model, images, args.tags, args.threshold, generate_kwargs),
        desc="captioning (onnx)", backend=", onnxruntime",
    )
