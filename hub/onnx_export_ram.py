"""Export a RAM or RAM++ tagging model to ONNX: one graph that onnxruntime runs without torch.

``tagger.onnx``: ``pixel_values`` (batch, 3, H, W) -> ``logits`` (batch, num_tags) and ``probabilities``
(their sigmoid). The label queries are part of the graph: RAM's ``relu(wordvec_proj(label_embed))`` from the
stored CLIP label embeddings; RAM++'s per-image description weighting (the normalised pooled visual token scores
each tag's description embeddings, ``exp(reweight_scale)`` x cosine, softmax per tag) from the stored description
embeddings. Batch is a dynamic axis; H and W are the processor's image size.

Beside the graph: the model's ``config.json`` (English names as ``id2label``, ``tag_names_chinese``,
``class_thresholds``), ``preprocessor_config.json``, ``tag_list.txt`` (and ``tag_list_chinese.txt`` with the
names byte for byte, trailing spaces kept) and ``onnx_config.json`` (``"family"``: ``"ram"`` or ``"ram_plus"``,
graph names, per-class thresholds, precision), all that :class:`tag2text.onnx_ram.OnnxRamTagger` reads.

The graph is exported, fused and quantized as the Tag2Text tagger (:mod:`.onnx_export`: eager attention, Swin's
shifted-window mask filled with -1e4, onnxruntime's BiasGelu / SkipLayerNormalization fusions, dynamic int8
weights); :func:`.onnx_export.quantize_export` makes an int8 copy of a float32 export of either family.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .onnx_export import (DEFAULT_OPSET, MANIFEST, QUANTIZATIONS, OnnxExportError, OnnxExportReport, _export_graph,
                          _fuse, _quantize_int8, _shift_masks_that_underflow)

logger = logging.getLogger(__name__)

RAM_FAMILIES = ("ram", "ram_plus")
GRAPH_FILES = {"tagger": "tagger.onnx"}


def is_ram_model(config: dict | None) -> bool:
    """Whether a ``config.json`` (as a dict) is a RAM or RAM++ model."""
    return bool(config) and config.get("model_type") in RAM_FAMILIES


def _load(model_dir):
    from tag2text import RamForImageTagging, RamPlusForImageTagging, Tag2TextImageProcessor

    source = os.fspath(model_dir)
    try:
        config = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
        model_class = RamPlusForImageTagging if config.get("model_type") == "ram_plus" else RamForImageTagging
        model = model_class.from_pretrained(source, attn_implementation="eager")
        image_processor = Tag2TextImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise OnnxExportError(f"cannot load a RAM / RAM++ model from {source!r}: {error}") from error
    model = model.float().eval()
    configs = [model.config, model.config.tagging_config, model.config.vision_config, model.vision_model.config,
               getattr(model.config, "text_config", None)]
    for sub_config in configs:
        if sub_config is not None:
            sub_config._attn_implementation = "eager"
    return model, image_processor


def _tagger(model):
    from torch import nn

    class RamTagger(nn.Module):
        """The model's own tagging path: visual tokens, label queries (RAM++: weighted per image), head, ``fc``."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            logits = self.model.get_tag_logits(self.model.get_image_embeddings(pixel_values))
            return logits, logits.sigmoid()

    return RamTagger(model).eval()


def _manifest(model, image_processor, opset, quantize, fusions) -> dict:
    config = model.config
    manifest = {
        "format": 1,
        "family": config.model_type,
        "graphs": dict(GRAPH_FILES),
        "opset": opset,
        "quantize": quantize,
        "fusions": fusions,
        "image_size": image_processor.size,
        "num_tags": config.num_tags,
        "tag_thresholds": config.threshold_list(),
    }
    if config.model_type == "ram_plus":
        manifest["descriptions_per_tag"] = config.descriptions_per_tag
    return manifest


def export_ram_onnx(model_dir, output_dir, opset: int = DEFAULT_OPSET, quantize: str | None = None,
                    fuse: bool = True) -> OnnxExportReport:
    """Export a RAM / RAM++ model directory to ``output_dir`` (see the module docstring).

    Args:
        model_dir: a directory written by ``tag2text convert`` / ``save_pretrained`` (model and image processor).
        output_dir: where the graph and the deployment files go (created; an existing graph is replaced).
        opset: ONNX opset (18 or newer).
        quantize: ``None`` (float32) or ``"int8"`` (dynamic int8 weights of every MatMul/Gemm with a constant
            weight, RAM++'s description embeddings included).
        fuse: onnxruntime's BiasGelu / SkipLayerNormalization fusions (``False``: standard ONNX operators only).
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if int(opset) < 18:
        raise ValueError(f"opset must be 18 or newer (the exporter's minimum), got {opset}")
    import torch
    from torch.export import Dim

    model, image_processor = _load(model_dir)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    size = image_processor.size
    # A batch of 2 as the example: torch.export specialises sizes 0 and 1.
    pixel_values = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    report = OnnxExportReport(output_dir=output, opset=int(opset), quantize=quantize)
    path = output / GRAPH_FILES["tagger"]
    with _shift_masks_that_underflow(model):
        try:
            _export_graph(_tagger(model), (pixel_values,), path, ["pixel_values"], ["logits", "probabilities"],
                          ({0: Dim("batch")},), int(opset))
        except Exception as error:  # torch.export raises many types; name the model and the graph
            raise OnnxExportError(f"exporting the tagger of {os.fspath(model_dir)!r} failed: {error}") from error
    if fuse:
        report.fusions["tagger"] = _fuse(path)
    if quantize == "int8":
        _quantize_int8(path, path)
    report.files["tagger"] = path.stat().st_size
    _write_deployment_files(model, image_processor, output, int(opset), quantize, report.fusions)
    logger.info("exported %s to %s (%s, %.1f MB)", os.fspath(model_dir), output, quantize or "float32",
                report.files["tagger"] / 1e6)
    return report


def _write_deployment_files(model, image_processor, output: Path, opset: int, quantize, fusions) -> None:
    config = model.config
    config.save_pretrained(output)
    image_processor.save_pretrained(output)
    # save_pretrained of registered classes copies their Python sources; a deployment runs none of them.
    for source in output.glob("*.py"):
        source.unlink()
    (output / "tag_list.txt").write_text("\n".join(config.tag_names) + "\n", encoding="utf-8")
    if config.tag_names_chinese is not None:
        (output / "tag_list_chinese.txt").write_text("\n".join(config.tag_names_chinese) + "\n", encoding="utf-8")
    manifest = _manifest(model, image_processor, opset, quantize, fusions)
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
