"""Export a Tag2Text captioning model to ONNX: three graphs that onnxruntime runs without torch.

- ``tagger.onnx``: ``pixel_values`` (batch, 3, H, W) -> ``tag_logits`` (batch, num_tags; raw logits, not
  thresholded) and ``image_embeds`` (batch, 1 + patches, vision width);
- ``text_encoder.onnx``: the image-tag interaction encoder, ``image_embeds`` + ``tag_input_ids`` /
  ``tag_attention_mask`` (batch, tag length) -> ``encoder_hidden_states`` and, per decoder layer, the
  cross-attention keys and values ``cross_key_<i>`` / ``cross_value_<i>`` (batch, heads, tag length, head dim),
  projected once per image as the PyTorch decoder's cache does;
- ``text_decoder.onnx``: one decoding step with past keys and values: ``input_ids`` (rows, new tokens),
  ``past_key_<i>`` / ``past_value_<i>`` (rows, heads, past length, head dim; length 0 at the first step) and the
  cross keys and values -> ``logits`` of the last position (rows, vocab) and ``present_key_<i>`` /
  ``present_value_<i>``. Captioning costs one step per token.

Batch, tag length, past and new-token lengths are dynamic axes; H and W are the processor's image size.
Beside the graphs: ``config.json`` and ``generation_config.json`` of the model, the tokenizer and processor
files, ``tag_list.txt`` and ``onnx_config.json`` (graph names, per-class thresholds, token ids, precision), so
that the directory is all :class:`tag2text.onnx.OnnxTag2Text` needs.

The graphs come from ``torch.onnx.export(dynamo=True)`` (torch.export, then onnxscript). The wrappers below
call the model's own modules; attention runs as eager math (transformers' SwinModel with SDPA does not
decompose to ONNX). Then onnxruntime's transformer fusions rewrite each graph (``fuse=True``, the default): bias +
GELU into ``BiasGelu``, residual + bias + layer norm into ``SkipLayerNormalization`` (onnxruntime contrib ops;
``fuse=False`` keeps standard ONNX ops only, for other runtimes). ``quantize="int8"`` adds onnxruntime's dynamic
int8 quantization of the MatMul/Gemm weights (activations quantized per call), after the fusions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

GRAPH_FILES = {"tagger": "tagger.onnx", "text_encoder": "text_encoder.onnx", "text_decoder": "text_decoder.onnx"}
MANIFEST = "onnx_config.json"
DEFAULT_OPSET = 18
QUANTIZATIONS = (None, "int8")


class OnnxExportError(RuntimeError):
    """The model could not be exported; the message names the model and the graph."""


@dataclass
class OnnxExportReport:
    output_dir: Path
    files: dict = field(default_factory=dict)  # graph name -> file size in bytes
    opset: int = DEFAULT_OPSET
    quantize: str | None = None
    fusions: dict = field(default_factory=dict)  # graph name -> {fused op type: count}


# ----------------------------------------------------------------------------------------------------------------
# Graph wrappers
# ----------------------------------------------------------------------------------------------------------------


def _wrappers():
    """The three export modules (built here so that importing this file does not import torch).

    Each runs the model's own modules as a user's inference does; under the exporter the model steps aside from
    its CPU inference shortcuts by itself (see ``is_tracing`` in ``modeling_tag2text_text``). The decoder step
    passes its past and the cross keys and values through the model's cache objects, as generation does.
    """
    from torch import nn
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    class Tagger(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            image_embeds = self.model.get_image_embeddings(pixel_values)
            return self.model.get_tag_logits(image_embeds), image_embeds

    class TextEncoder(nn.Module):
        """The interaction encoder, then each decoder layer's cross-attention keys and values of its states: what
        the PyTorch decoder's cross-attention cache holds after its first step."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, image_embeds, tag_input_ids, tag_attention_mask):
            states = self.model.encode_tags(tag_input_ids, tag_attention_mask, image_embeds)[0]
            cross = []
            for layer in self.model.text_decoder.bert.encoder.layer:
                attention = layer.crossattention.self
                cross.append(attention._heads(attention.key(states), attention.num_attention_heads))
                cross.append(attention._heads(attention.value(states), attention.num_attention_heads))
            return (states, *cross)

    class TextDecoderStep(nn.Module):
        """One causal step of the decoder over new tokens: the past self-attention keys and values and the cross
        keys and values go in as the model's cache, the keys and values with this step appended come out. The
        language-model head runs on the last position only (the only one generation reads)."""

        def __init__(self, model):
            super().__init__()
            self.decoder = model.text_decoder
            self.num_layers = len(self.decoder.bert.encoder.layer)

        def forward(self, input_ids, *caches):
            layers = self.num_layers
            past, cross = caches[: 2 * layers], caches[2 * layers:]
            self_cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)])
            cross_cache = DynamicCache(ddp_cache_data=[(cross[2 * i], cross[2 * i + 1]) for i in range(layers)])
            cache = EncoderDecoderCache(self_cache, cross_cache)  # cross layers filled: marked as projected
            hidden = self.decoder.bert(input_ids, None, None, cache=cache, is_decoder=True, mode="multimodal")[0]
            logits = self.decoder.cls(hidden[:, -1:, :])[:, 0, :]
            return (logits, *[state for layer in self_cache.layers for state in (layer.keys, layer.values)])

    return Tagger, TextEncoder, TextDecoderStep


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------


def _load(model_dir_or_repo):
    from tag2text import Tag2TextForCaptioning, Tag2TextProcessor

    try:
        model = Tag2TextForCaptioning.from_pretrained(model_dir_or_repo, attn_implementation="eager")
        processor = Tag2TextProcessor.from_pretrained(model_dir_or_repo)
    except (OSError, ValueError) as error:
        source = os.fspath(model_dir_or_repo)
        raise OnnxExportError(f"cannot load a Tag2Text model from {source!r}: {error}") from error
    model = model.float().eval()
    for config in (model.config, model.config.text_config, model.config.tagging_config,
                   model.config.vision_config, model.vision_model.config):
        config._attn_implementation = "eager"
    return model, processor


# Swin's shifted-window mask adds -100 to the scores of cross-region pairs; softmax turns them into exp(-100) ~
# 4e-44, a denormal float, and a matrix product over denormals runs 30-50x slower on this CPU (measured: 300 ms
# against 6 ms for one [32, 16, 144, 144] x [32, 16, 144, 32] product, in onnxruntime and in torch alike). The
# exported graph runs attention as softmax + MatMul, so those products took 1.1 s of the released-size tagger's
# 11 s at batch 8. A mask of -1e4 underflows to exactly 0 instead: the probabilities differ by < 1e-43 and the
# outputs not at all in float32. (PyTorch's SDPA path does not slow down, so the model keeps transformers' mask.)
_SHIFT_MASK_FILL = -1e4


@contextlib.contextmanager
def _shift_masks_that_underflow(model):
    """For the export only: each Swin layer of ``model`` builds its shifted-window mask with -1e4 for -100."""
    layers = [m for m in model.modules() if callable(getattr(m, "get_attn_mask", None))
              and hasattr(m, "shift_size") and "get_attn_mask" not in vars(m)]

    def underflowing(original):
        def get_attn_mask(*args, **kwargs):
            mask = original(*args, **kwargs)
            return None if mask is None else mask.masked_fill(mask < 0, _SHIFT_MASK_FILL)
        return get_attn_mask

    for layer in layers:
        layer.get_attn_mask = underflowing(layer.get_attn_mask)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.get_attn_mask


def _export_graph(module, args, path, input_names, output_names, dynamic_shapes, opset):
    import torch

    with torch.no_grad():  # as inference runs; the model leaves its CPU shortcuts to eager calls by itself
        program = torch.onnx.export(
            module,
            args,
            None,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
    program.save(os.fspath(path), external_data=False)


def _fuse(path: Path) -> dict:
    """onnxruntime's transformer fusions of ``path``, in place; returns the fused operators counted by type.

    The exporter writes GELU as Erf arithmetic after a separate bias Add, and each residual + layer norm as three
    nodes; onnxruntime's session-level optimizer does not recognise those forms (the profile shows 261 unfused bias
    Adds and unfused Erf GELUs in the released-size tagger), its Python optimizer does. Only local pattern fusions
    run: attention fusion expects BERT's own self-attention (no past keys, no cross-attention, no Swin window bias)
    and the embedding fusion BERT's positions from 0 (the decoder's start after the past), so both stay off.
    ``opt_level=0`` bakes in no session-level rewrites, so the file stays valid for any execution provider.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_attention = False
    options.enable_embed_layer_norm = False
    options.enable_rotary_embeddings = False
    optimized = optimize_model(os.fspath(path), model_type="bert", num_heads=0, hidden_size=0,
                               optimization_options=options, opt_level=0, use_gpu=False)
    fused = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
    temporary = path.with_suffix(".fused.tmp")
    optimized.save_model_to_file(os.fspath(temporary), use_external_data_format=False)
    os.replace(temporary, path)
    return fused


def _manifest(model, processor, opset, quantize, fusions) -> dict:
    config = model.config
    text = config.text_config
    decoder_attention = model.text_decoder.bert.encoder.layer[0].attention.self
    return {
        "format": 1,
        "graphs": dict(GRAPH_FILES),
        "opset": opset,
        "quantize": quantize,
        "fusions": fusions,
        "image_size": processor.image_processor.size,
        "num_tags": config.num_tags,
        "tag_thresholds": config.threshold_list(),
        "caption_excluded_tag_ids": list(config.caption_excluded_tag_ids),
        "max_tag_length": config.max_tag_length,
        "tag_separator": config.tag_separator,
        "prompt": config.prompt,
        "prompt_token_ids": list(config.prompt_token_ids or []),
        "decoder_layers": len(model.text_decoder.bert.encoder.layer),
        "decoder_heads": decoder_attention.num_attention_heads,
        "decoder_head_dim": text.hidden_size // decoder_attention.num_attention_heads,
        "max_position_embeddings": text.max_position_embeddings,
        "token_ids": {name: getattr(text, f"{name}_token_id") for name in ("pad", "bos", "eos", "sep", "enc")},
    }


def export_onnx(model_dir_or_repo, output_dir, opset: int = DEFAULT_OPSET, quantize: str | None = None,
                fuse: bool = True, progress: bool = True) -> OnnxExportReport:
    """Export a Tag2Text captioning model directory (or Hub repo) to ``output_dir`` (see the module docstring).

    Args:
        model_dir_or_repo: a directory saved by ``save_pretrained`` (or a Hub id) with model and processor.
        output_dir: where the graphs and the deployment files go (created; existing graphs are replaced).
        opset: ONNX opset of the graphs (18 or newer).
        quantize: ``None`` (float32) or ``"int8"`` (dynamic int8 weights of every MatMul/Gemm).
        fuse: apply onnxruntime's BiasGelu / SkipLayerNormalization fusions (contrib ops; ``False`` writes
            standard ONNX operators only).
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if int(opset) < 18:
        raise ValueError(f"opset must be 18 or newer (the exporter's minimum), got {opset}")
    import torch
    from torch.export import Dim
    from tqdm.auto import tqdm

    model, processor = _load(model_dir_or_repo)
    if model.config.prompt_token_ids is None or model.config.tag_token_ids is None:
        raise OnnxExportError(
            f"{os.fspath(model_dir_or_repo)!r}: config.prompt_token_ids / tag_token_ids are not set (call "
            "config.set_tag_vocabulary(tokenizer=...) and save again)"
        )
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    Tagger, TextEncoder, TextDecoderStep = _wrappers()
    config = model.config
    size = processor.image_processor.size
    layers = len(model.text_decoder.bert.encoder.layer)
    attention = model.text_decoder.bert.encoder.layer[0].attention.self
    num_heads = attention.num_attention_heads
    head_dim = config.text_config.hidden_size // num_heads

    # Example inputs: sizes of at least 2 on every dynamic axis (torch.export specialises 0 and 1).
    batch, tag_length, past, new = 2, 5, 3, 2
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator)
    with torch.no_grad():
        image_embeds = model.get_image_embeddings(pixel_values)
    tag_ids = torch.full((batch, tag_length), config.text_config.pad_token_id, dtype=torch.long)
    tag_ids[:, 0] = config.text_config.enc_token_id
    tag_mask = torch.ones(batch, tag_length, dtype=torch.long)
    input_ids = torch.full((batch, new), config.text_config.bos_token_id, dtype=torch.long)
    past_states = [torch.zeros(batch, num_heads, past, head_dim) for _ in range(2 * layers)]
    cross_states = [torch.zeros(batch, num_heads, tag_length, head_dim) for _ in range(2 * layers)]

    b, t, p, n = Dim("batch"), Dim("tag_length"), Dim("past_length", min=0), Dim("new_tokens")
    cross_names = [f"cross_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    past_names = [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    present_names = [f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    jobs = [
        ("tagger", Tagger(model), (pixel_values,), ["pixel_values"], ["tag_logits", "image_embeds"],
         ({0: b},)),
        ("text_encoder", TextEncoder(model), (image_embeds, tag_ids, tag_mask),
         ["image_embeds", "tag_input_ids", "tag_attention_mask"], ["encoder_hidden_states", *cross_names],
         ({0: b}, {0: b, 1: t}, {0: b, 1: t})),
        ("text_decoder", TextDecoderStep(model), (input_ids, *past_states, *cross_states),
         ["input_ids", *past_names, *cross_names], ["logits", *present_names],
         ({0: b, 1: n}, (*[{0: b, 2: p}] * len(past_states), *[{0: b, 2: t}] * len(cross_states)))),
    ]
    report = OnnxExportReport(output_dir=output, opset=int(opset), quantize=quantize)
    with _shift_masks_that_underflow(model):
        for name, module, args, inputs, outputs, shapes in tqdm(jobs, desc="exporting", unit="graph",
                                                                disable=not progress):
            path = output / GRAPH_FILES[name]
            try:
                _export_graph(module, args, path, inputs, outputs, shapes, int(opset))
            except Exception as error:  # torch.export raises many types; name the graph that failed
                raise OnnxExportError(
                    f"exporting {name} of {os.fspath(model_dir_or_repo)!r} failed: {error}") from error
            if fuse:
                report.fusions[name] = _fuse(path)
            if quantize == "int8":
                _quantize_int8(path, path)
            report.files[name] = path.stat().st_size
    _write_deployment_files(model, processor, output, int(opset), quantize, report.fusions)
    logger.info("exported %s to %s (%s, %.1f MB)", os.fspath(model_dir_or_repo), output,
                quantize or "float32", sum(report.files.values()) / 1e6)
    return report


def quantize_export(export_dir, output_dir) -> OnnxExportReport:
    """Write an int8 copy of a float32 export (what ``export_onnx(..., quantize="int8")`` gives, without
    exporting again)."""
    source, output = Path(export_dir), Path(output_dir)
    manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("quantize"):
        raise ValueError(f"{os.fspath(source)!r} is already quantized ({manifest['quantize']})")
    output.mkdir(parents=True, exist_ok=True)
    report = OnnxExportReport(output_dir=output, opset=manifest["opset"], quantize="int8",
                              fusions=dict(manifest.get("fusions") or {}))
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".onnx" and path.name != MANIFEST:
            shutil.copyfile(path, output / path.name)
    for name, file_name in manifest["graphs"].items():
        _quantize_int8(source / file_name, output / file_name)
        report.files[name] = (output / file_name).stat().st_size
    manifest["quantize"] = "int8"
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return report


def _quantize_int8(path: Path, destination: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = destination.with_suffix(".int8.tmp")
    # Only products with a constant weight (the linear layers); attention's activation-activation products stay
    # in float32.
    quantize_dynamic(os.fspath(path), os.fspath(quantized), op_types_to_quantize=["MatMul", "Gemm"],
                     weight_type=QuantType.QInt8, per_channel=False,
                     extra_options={"MatMulConstBOnly": True})
    os.replace(quantized, destination)


def _write_deployment_files(model, processor, output: Path, opset: int, quantize, fusions) -> None:
    model.config.save_pretrained(output)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(output)
    processor.save_pretrained(output)
    # save_pretrained of registered classes copies their Python sources; a deployment runs none of them.
    for source in output.glob("*.py"):
        source.unlink()
    (output / "tag_list.txt").write_text("\n".join(model.config.tag_names) + "\n", encoding="utf-8")
    (output / MANIFEST).write_text(json.dumps(_manifest(model, processor, opset, quantize, fusions), indent=1) + "\n",
                                   encoding="utf-8")

