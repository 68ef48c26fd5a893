"""``tag2text export``: write the ONNX graphs and deployment files of a Tag2Text model.

    tag2text export --model DIR_OR_REPO --output-dir OUT [--opset 18] [--quantize int8]

OUT then holds tagger.onnx, text_encoder.onnx, text_decoder.onnx and what tag2text.onnx.OnnxTag2Text needs
beside them (config, tag list, thresholds, tokenizer, generation defaults). torch is imported only in ``run``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .cli_args import UsageError, int_at_least

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Tag2Text model directory (model + processor) or Hub repo id")
    parser.add_argument("--output-dir", required=True, help="directory to write the ONNX export to")
    parser.add_argument("--opset", type=int_at_least(18), default=18, help="ONNX opset (18 or newer; default 18)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: onnxruntime dynamic quantization of the linear layers' weights")


def run(args) -> int:
    output = Path(args.output_dir)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output-dir {args.output_dir!r} exists and is not a directory")
    model = Path(args.model)
    if (model.is_absolute() or args.model.startswith(".")) and not model.is_dir():
        raise UsageError(f"--model {args.model!r}: no such directory")
    if model.is_dir() and not (model / "config.json").is_file():
        raise UsageError(f"--model {args.model!r}: the directory holds no config.json (not a saved model)")

    from .onnx_export import OnnxExportError, export_onnx

    try:
        report = export_onnx(args.model, output, opset=args.opset, quantize=args.quantize)
    except OnnxExportError as error:
        raise UsageError(str(error)) from error
    sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in report.files.items())
    logger.info("wrote %s (%s; %s)", output, args.quantize or "float32", sizes)
    return 0
