"""``tag2text caption --backend onnx``: the caption command on an ONNX export (tag2text.onnx, no torch).

Same JSON lines as the torch backend ({"image", "tags", "tag_scores", "caption"}; "error" for an unreadable
image, exit status 1 if any failed), computed by :class:`tag2text.onnx.OnnxTag2Text` through
:class:`~tag2text.hub.inference.OnnxBackend`. A RAM / RAM++ export (tagging only) gives
{"image", "tags", "tags_zh", "tag_scores"} lines through :class:`~tag2text.hub.inference.OnnxTaggingBackend`
(:class:`tag2text.onnx_ram.OnnxRamTagger`; the rows of the torch tagging backend), with the model's per-class
thresholds or ``--threshold``.
"""

from __future__ import annotations

from .caption_io import check_max_length, collect_images, write_captions
from .cli_args import UsageError, output_file


def _run_tagging(args, paths, providers) -> int:
    from tag2text.onnx_ram import OnnxRamError, OnnxRamTagger

    from .inference import OnnxTaggingBackend

    for option, value in (("--tags", args.tags), ("--num-beams", args.num_beams), ("--max-length", args.max_length)):
        if value is not None:
            raise UsageError(f"{option}: {args.model} is a tagging-only export (RAM / RAM++), which writes no "
                             "captions")
    try:
        runtime = OnnxRamTagger.from_pretrained(args.model, providers=providers)
    except OnnxRamError as error:
        raise UsageError(f"--model {args.model}: {error}") from error
    return write_captions(args, paths, OnnxTaggingBackend(runtime), desc="tagging (onnx)", label=", onnxruntime")


def run(args) -> int:
    from tag2text.onnx import OnnxModelError, OnnxTag2Text
    from tag2text.onnx_ram import OnnxRamError, is_ram_export

    from .inference import OnnxBackend

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
        tagging_only = is_ram_export(args.model)
    except OnnxRamError as error:
        raise UsageError(f"--model {args.model}: {error}") from error
    if tagging_only:
        return _run_tagging(args, paths, providers)
    try:
        model = OnnxTag2Text.from_pretrained(args.model, providers=providers)
    except OnnxModelError as error:
        raise UsageError(f"--model {args.model}: {error}") from error
    if args.max_length is not None:
        check_max_length(args.max_length, len(model.manifest["prompt_token_ids"]))
    return write_captions(args, paths, OnnxBackend(model), desc="captioning (onnx)", label=", onnxruntime")
