"""``tag2text export``: write the ONNX graphs and deployment files of a Tag2Text, RAM or RAM++ model.

    tag2text export --model DIR_OR_REPO --output-dir OUT [--opset 18] [--quantize int8] [--no-fusion]

For Tag2Text, OUT then holds tagger.onnx, text_encoder.onnx, text_decoder.onnx and what
tag2text.onnx.OnnxTag2Text needs beside them (config, tag list, thresholds, tokenizer, generation defaults). For a
RAM / RAM++ directory (``model_type`` in its config.json), OUT holds tagger.onnx (pixel values -> logits and
probabilities, label queries inside) and what tag2text.onnx_ram.OnnxRamTagger needs (config with English and
Chinese names and thresholds, image processor, tag lists). torch is imported only in ``run``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .cli_args import UsageError, int_at_least, output_directory

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="Tag2Text model directory (model + processor) or Hub repo id, or a RAM / RAM++ directory")
    parser.add_argument("--output-dir", required=True, help="directory to write the ONNX export to")
    parser.add_argument("--opset", type=int_at_least(18), default=18, help="ONNX opset (18 or newer; default 18)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: onnxruntime dynamic quantization of the linear layers' weights")
    parser.add_argument("--no-fusion", dest="fuse", action="store_false",
                        help="write standard ONNX operators only (default: onnxruntime's BiasGelu and "
                             "SkipLayerNormalization fusions, which only onnxruntime runs)")


def run(args) -> int:
    from .model_source import read_local_config, resolve_model_source
    from .onnx_export_ram import is_ram_model

    source = resolve_model_source(args.model, "--model")
    output_directory(args.output_dir, "--output-dir")
    output = Path(args.output_dir)

    from .onnx_export import OnnxExportError, export_onnx

    try:
        if is_ram_model(read_local_config(source)):
            from .onnx_export_ram import export_ram_onnx

            report = export_ram_onnx(source, output, opset=args.opset, quantize=args.quantize, fuse=args.fuse)
        else:
            report = export_onnx(source, output, opset=args.opset, quantize=args.quantize, fuse=args.fuse)
    except OnnxExportError as error:
        raise UsageError(str(error)) from error
    sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in report.files.items())
    fused = sum(sum(counts.values()) for counts in report.fusions.values())
    logger.info("wrote %s (%s, %d fused operators; %s)", output, args.quantize or "float32", fused, sizes)
    return 0
