"""``tag2text export``: write the ONNX graphs and deployment files of a Tag2Text model.

    tag2text export --model DIR_OR_REPO --output-dir OUT [--opset 18] [--quantize int8] [--no-fusion]

OUT then holds tagger.onnx, text_encoder.onnx, text_decoder.onnx and what tag2text.onnx.OnnxTag2Text needs
beside them (config, tag list, thresholds, tokenizer, generation defaults). torch is imported only in ``run``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .cli_args import UsageError, int_at_least, output_directory

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Tag2Text model directory (model + processor) or Hub repo id")
    parser.add_argument("--output-dir", required=True, help="directory to write the ONNX export to")
    parser.add_argument("--opset", type=int_at_least(18), default=18, help="ONNX opset (18 or newer; default 18)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: onnxruntime dynamic quantization of the linear layers' weights")
    parser.add_argument("--no-fusion", dest="fuse", action="store_false",
                        help="write standard ONNX operators only (default: onnxruntime's BiasGelu and "
                             "SkipLayerNormalization fusions, which only onnxruntime runs)")


def run(args) -> int:
    from .model_source import resolve_model_source

    source = resolve_model_source(args.model, "--model")
    output_directory(args.output_dir, "--output-dir")
    output = Path(args.output_dir)

    from .onnx_export import OnnxExportError, export_onnx

    try:
        report = export_onnx(source, output, opset=args.opset, quantize=args.quantize, fuse=args.fuse)
    except OnnxExportError as error:
        raise UsageError(str(error)) from error
    sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in report.files.items())
    fused = sum(sum(counts.values()) for counts in report.fusions.values())
    logger.info("wrote %s (%s, %d fused operators; %s)", output, args.quantize or "float32", fused, sizes)
    return 0
