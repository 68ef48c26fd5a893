"""ONNX export of a tiny random Tag2Text model against the PyTorch model it came from.

The model's tag head (centred, 30x) and cross-attention (10x) are scaled so that the three test images get
different tags and different captions (random tiny weights otherwise see nearly the same image). Every
comparison is with the PyTorch model's own outputs on the same pixels: tag logits within 1e-4, identical
tags, identical greedy and beam token ids, for a batch of three images and for each image alone.
"""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import tiny_factory
from tag2text.hub import export_onnx
from tag2text.hub.cli import main
from tag2text.hub.model_source import ModelSourceError
from tag2text.onnx import OnnxModelError, OnnxTag2Text
from tag2text.processing import ImageInputError
from test_image_loading import awkward_files

ATOL = 1e-4


def make_images():
    y, x = np.mgrid[0:40, 0:48]
    gradient = np.stack([x * 5, y * 6, (x + y) * 3], -1).astype(np.uint8)
    stripes = np.zeros((40, 48, 3), np.uint8)
    stripes[::4] = 255
    flat = np.full((36, 52, 3), (20, 160, 40), np.uint8)
    return [Image.fromarray(gradient), Image.fromarray(stripes), Image.fromarray(flat)]


@pytest.fixture(scope="module")
def torch_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, torch_threads):
    root = tmp_path_factory.mktemp("onnx_tiny")
    tokenizer = tiny_factory.make_tokenizer(root)
    processor = tiny_factory.make_processor(tokenizer)
    # Threshold 0.5: the centred, amplified tag logits below decide on their sign.
    model = tiny_factory.make_model(tiny_factory.make_config(tokenizer, tag_threshold=0.5), seed=3, fire=())
    pixel_values = processor(images=make_images())["pixel_values"]
    with torch.no_grad():
        for layer in list(model.text_decoder.bert.encoder.layer) + list(model.text_encoder.encoder.layer):
            layer.crossattention.self.value.weight.mul_(10)
            layer.crossattention.output.dense.weight.mul_(10)
        head = model.tagging_head
        head.classifier_bias.zero_()
        logits = model.get_tag_logits(model.get_image_embeddings(pixel_values))
        head.classifier_bias.copy_(-30 * logits.mean(0))
        head.classifier_weight.mul_(30)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    export_dir = root / "onnx"
    report = export_onnx(model_dir, export_dir, progress=False)
    return {"model": model, "processor": processor, "model_dir": model_dir, "export_dir": export_dir,
            "report": report, "pixel_values": pixel_values, "runtime": OnnxTag2Text.from_pretrained(export_dir)}


def cases(pixel_values):
    yield "batch", pixel_values
    for index in range(pixel_values.shape[0]):
        yield f"img{index}", pixel_values[index: index + 1]


def test_export_writes_the_graphs_with_dynamic_axes_and_the_deployment_files(setup):
    out = setup["export_dir"]
    for name in ("tagger.onnx", "text_encoder.onnx", "text_decoder.onnx", "config.json", "generation_config.json",
                 "tokenizer.json", "processor_config.json", "tag_list.txt", "onnx_config.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.py"))
    model = setup["model"]

    def dims(graph, name):
        value = next(v for v in list(graph.input) + list(graph.output) if v.name == name)
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    tagger = onnx.load(out / "tagger.onnx").graph
    assert isinstance(dims(tagger, "pixel_values")[0], str) and dims(tagger, "pixel_values")[1:] == [3, 32, 32]
    assert isinstance(dims(tagger, "tag_logits")[0], str) and dims(tagger, "tag_logits")[1] == model.config.num_tags
    encoder = onnx.load(out / "text_encoder.onnx").graph
    assert all(isinstance(d, str) for d in dims(encoder, "tag_input_ids"))
    decoder = onnx.load(out / "text_decoder.onnx").graph
    layers = model.config.text_config.num_hidden_layers
    assert [i.name for i in decoder.input][:3] == ["input_ids", "past_key_0", "past_value_0"]
    assert len(decoder.input) == 1 + 4 * layers and len(decoder.output) == 1 + 2 * layers
    past = dims(decoder, "past_key_0")
    assert isinstance(past[0], str) and isinstance(past[2], str) and past[1] == 4 and past[3] == 8
    manifest = json.loads((out / "onnx_config.json").read_text())
    assert manifest["tag_thresholds"] == pytest.approx(model.config.threshold_list())
    assert manifest["caption_excluded_tag_ids"] == model.config.caption_excluded_tag_ids
    assert (out / "tag_list.txt").read_text().splitlines() == model.config.tag_names
    assert set(setup["report"].files) == {"tagger", "text_encoder", "text_decoder"}


def _op_counts(path):
    counts = {}
    for node in onnx.load(path).graph.node:
        key = (node.domain or "ai.onnx", node.op_type)
        counts[key] = counts.get(key, 0) + 1
    return counts


@torch.no_grad()
def test_default_export_is_fused_and_no_fusion_keeps_standard_ops_with_the_same_outputs(setup, tmp_path):
    """The default export carries onnxruntime's BiasGelu / SkipLayerNormalization fusions in every graph (one
    BiasGelu per feed-forward), recorded in the manifest; ``--no-fusion`` writes standard ONNX
    operators only, and both give the same logits and token ids."""
    model, fused_dir = setup["model"], setup["export_dir"]
    config = model.config
    # GELUs: one per Swin block and tag-head layer; one per encoder layer; one per decoder layer + the LM head's.
    layers = {"tagger": sum(config.vision_config.depths) + config.tagging_config.num_hidden_layers,
              "text_encoder": config.text_config.num_hidden_layers,
              "text_decoder": config.text_config.num_hidden_layers + 1}
    manifest = json.loads((fused_dir / "onnx_config.json").read_text())
    for name, layer_count in layers.items():
        counts = _op_counts(fused_dir / f"{name}.onnx")
        assert counts.get(("com.microsoft", "BiasGelu"), 0) == layer_count, name
        assert counts.get(("com.microsoft", "SkipLayerNormalization"), 0) >= layer_count, name
        assert manifest["fusions"][name]["BiasGelu"] == layer_count
        fused_norms = counts[("com.microsoft", "SkipLayerNormalization")]
        assert manifest["fusions"][name]["SkipLayerNormalization"] == fused_norms
        assert not any(op == "Erf" for _, op in counts), name  # every GELU was fused
    plain_dir = tmp_path / "plain"
    assert main(["export", "--model", str(setup["model_dir"]), "--output-dir", str(plain_dir), "--no-fusion"]) == 0
    for name in layers:
        assert {domain for domain, _ in _op_counts(plain_dir / f"{name}.onnx")} == {"ai.onnx"}, name
    assert json.loads((plain_dir / "onnx_config.json").read_text())["fusions"] == {}
    plain = OnnxTag2Text.from_pretrained(plain_dir)
    pixels = setup["pixel_values"].numpy()
    np.testing.assert_allclose(setup["runtime"].tag_logits(pixel_values=pixels)[0],
                               plain.tag_logits(pixel_values=pixels)[0], atol=ATOL)
    np.testing.assert_array_equal(setup["runtime"].generate(pixel_values=pixels, num_beams=3),
                                  plain.generate(pixel_values=pixels, num_beams=3))


def test_shift_window_masks_underflow_to_zero_in_the_tagger(setup):
    """Swin's shifted-window mask is -100 in PyTorch; exp(-100) is a denormal float that slows the attention
    products 30-50x, so the exported tagger carries -1e4 (exactly 0 after softmax) and no -100; the model
    is left as it was after the export."""
    from onnx import numpy_helper

    masks = [numpy_helper.to_array(t) for t in onnx.load(setup["export_dir"] / "tagger.onnx").graph.initializer]
    masks = [m for m in masks if m.dtype == np.float32 and m.size and m.min() < -50]
    shifted = [m for m in setup["model"].vision_model.modules() if getattr(m, "shift_size", 0) > 0]
    assert shifted and len(masks) == len(shifted)
    for mask in masks:
        assert set(np.unique(mask).tolist()) == {0.0, -1e4}
    from tag2text.hub.onnx_export import _shift_masks_that_underflow

    layer = shifted[0]
    size = layer.input_resolution
    with _shift_masks_that_underflow(setup["model"]) as count:
        assert count == len([m for m in setup["model"].modules() if hasattr(m, "shift_size")])
        assert float(layer.get_attn_mask(*size, torch.float32, "cpu").min()) == -1e4
    assert float(layer.get_attn_mask(*size, torch.float32, "cpu").min()) == -100.0  # the model is restored
    assert "get_attn_mask" not in vars(layer)


def test_preprocessing_equals_the_image_processor(setup, tmp_path):
    processor, runtime = setup["processor"], setup["runtime"]
    base = make_images()[0]
    rotated = base.copy()
    exif = rotated.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    rotated.save(path, exif=exif)
    inputs = [base, base.convert("RGBA"), base.convert("L"), base.convert("P"), str(path), path.read_bytes(),
              np.asarray(base), np.asarray(base.convert("L")).astype(np.uint16) * 200]
    inputs += [str(file) for file, _ in awkward_files(tmp_path).values()]
    for item in inputs:
        expected = processor(images=item)["pixel_values"].numpy()
        assert np.array_equal(runtime.preprocess(item), expected), type(item)
    # Unreadable images raise the processor's error class, with the processor's message.
    for item in (str(tmp_path / "missing.png"), b"no image"):
        with pytest.raises(ImageInputError) as theirs:
            processor(images=item)
        with pytest.raises(ImageInputError) as ours:
            runtime.preprocess(item)
        assert str(ours.value) == str(theirs.value) and "image 0 (" in str(ours.value)


@torch.no_grad()
def test_tag_logits_and_tags_match_pytorch(setup):
    model, runtime = setup["model"], setup["runtime"]
    seen = set()
    for case, pixels in cases(setup["pixel_values"]):
        expected = model.get_tag_logits(model.get_image_embeddings(pixels))
        logits, image_embeds = runtime.tag_logits(pixel_values=pixels.numpy())
        assert np.abs(logits - expected.numpy()).max() < ATOL, case
        assert image_embeds.shape == tuple(model.get_image_embeddings(pixels).shape)
        ours, theirs = runtime.tag(pixel_values=pixels.numpy()), model.tag(pixels)
        assert [t.tag_ids for t in ours] == [t.tag_ids for t in theirs], case
        assert [t.tags for t in ours] == [t.tags for t in theirs], case
        for a, b in zip(ours, theirs):
            assert np.allclose(a.scores, b.scores, atol=1e-5)
        with_excluded = runtime.tag(pixel_values=pixels.numpy(), include_excluded=True, threshold=0.3)
        assert [t.tag_ids for t in with_excluded] == [
            t.tag_ids for t in model.tag(pixels, include_excluded=True, threshold=0.3)]
        seen.update(tuple(t.tags) for t in ours)
    assert len(seen) == 3  # the three images are tagged differently


@pytest.mark.parametrize("num_beams", [1, 3])
@torch.no_grad()
def test_generated_ids_match_pytorch(setup, num_beams):
    model, runtime = setup["model"], setup["runtime"]
    captions = set()
    for case, pixels in cases(setup["pixel_values"]):
        expected = model.generate(pixels, num_beams=num_beams).numpy()
        ours = runtime.generate(pixel_values=pixels.numpy(), num_beams=num_beams)
        assert ours.dtype == np.int64 and np.array_equal(ours, expected), case
        captions.update(runtime.decode_captions(ours))
        assert runtime.decode_captions(ours) == setup["processor"].decode_captions(torch.from_numpy(ours))
    assert len(captions) == 3


@torch.no_grad()
def test_default_generation_is_beam_three_and_images_load_from_files(setup, tmp_path):
    model, runtime = setup["model"], setup["runtime"]
    paths = []
    for index, image in enumerate(make_images()):
        paths.append(tmp_path / f"{index}.png")
        image.save(paths[-1])
    expected = model.generate(setup["processor"](images=[str(p) for p in paths])["pixel_values"])
    assert np.array_equal(runtime.generate(paths), expected.numpy())
    assert runtime.caption(paths) == setup["processor"].decode_captions(expected)


@pytest.mark.parametrize("options", [
    {"max_new_tokens": 5},
    {"max_new_tokens": 12, "min_new_tokens": 12},
    {"max_length": 14, "min_length": 9},
    {"repetition_penalty": 1.4},
    {"length_penalty": 0.3, "early_stopping": True},
    {"early_stopping": "never", "num_beams": 2},
])
@torch.no_grad()
def test_generation_options_match_pytorch(setup, options):
    model, runtime = setup["model"], setup["runtime"]
    options = {"num_beams": 3, **options}
    for beams in sorted({options["num_beams"], 1}):
        kwargs = {**options, "num_beams": beams}
        if beams == 1:
            kwargs.pop("length_penalty", None)
            kwargs.pop("early_stopping", None)
        expected = model.generate(setup["pixel_values"], **kwargs).numpy()
        assert np.array_equal(runtime.generate(pixel_values=setup["pixel_values"].numpy(), **kwargs), expected), kwargs


@pytest.mark.parametrize("tags", [
    [["dog", "sky"], ["cat"], "grass | red | fire hydrant"],  # names from the tag list
    [["dog", "surfboard"], "mountain | lake", ["a", "very", "long"] * 15],  # free-form and truncated
])
@torch.no_grad()
def test_user_tags_steer_like_pytorch(setup, tags):
    model, runtime, processor = setup["model"], setup["runtime"], setup["processor"]
    pixels = setup["pixel_values"]
    for beams in (1, 3):
        expected = model.generate(pixels, tags=tags, num_beams=beams, tokenizer=processor.tokenizer).numpy()
        ours = runtime.generate(pixel_values=pixels.numpy(), tags=tags, num_beams=beams, return_dict=True)
        assert np.array_equal(ours["sequences"], expected)
        assert ours["tags"] == processor.parse_tags(tags, 3)
    single = model.generate(pixels[:1], tags="dog | sky", num_beams=3).numpy()
    assert np.array_equal(runtime.generate(pixel_values=pixels[:1].numpy(), tags="dog | sky"), single)
    with pytest.raises(OnnxModelError, match="tags has 2 entries but there are 3 images"):
        runtime.generate(pixel_values=pixels.numpy(), tags=["dog", ["cat"]])


def test_caption_runs_one_decoder_step_per_token(setup):
    runtime = setup["runtime"]
    session = runtime.sessions["text_decoder"]
    calls = []

    class Counting:
        def run(self, names, feed):
            calls.append(feed["input_ids"].shape)
            return session.run(names, feed)

    runtime.sessions["text_decoder"] = Counting()
    try:
        ids = runtime.generate(pixel_values=setup["pixel_values"].numpy()[:1], num_beams=1, max_new_tokens=9,
                               min_new_tokens=9)
    finally:
        runtime.sessions["text_decoder"] = session
    assert ids.shape[1] == 4 + 9
    assert len(calls) == 9 and calls[0] == (1, 4) and all(shape == (1, 1) for shape in calls[1:])


def test_runtime_runs_without_torch_and_transformers(setup, tmp_path):
    expected = setup["runtime"].generate(pixel_values=setup["pixel_values"].numpy())
    np.save(tmp_path / "pixels.npy", setup["pixel_values"].numpy())
    code = f"""
import sys
sys.modules["torch"] = None
sys.modules["transformers"] = None
import numpy as np
from tag2text.onnx import OnnxTag2Text
model = OnnxTag2Text.from_pretrained({str(setup['export_dir'])!r})
ids = model.generate(pixel_values=np.load({str(tmp_path / 'pixels.npy')!r}))
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers') and sys.modules[m] is not None)
import json
print(json.dumps({{"ids": ids.tolist(), "loaded": loaded}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert reply["ids"] == expected.tolist() and reply["loaded"] == []


def test_caption_command_with_the_onnx_backend_prints_the_torch_lines(setup, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for index, image in enumerate(make_images()):
        image.save(images / f"{index}.png")
    (images / "broken.png").write_bytes(b"not an image")
    lines = {}
    for backend, model in (("torch", setup["model_dir"]), ("onnx", setup["export_dir"])):
        output = tmp_path / f"{backend}.jsonl"
        status = main(["caption", "--backend", backend, "--model", str(model), str(images), "--batch-size", "2",
                       "--output", str(output)])
        assert status == 1  # the broken image
        lines[backend] = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines["onnx"]) == 4
    for ours, theirs in zip(lines["onnx"], lines["torch"]):
        assert ours.keys() == theirs.keys() and ours["image"] == theirs["image"]
        if "error" in theirs:
            assert "not a readable image" in ours["error"]
            continue
        assert ours["tags"] == theirs["tags"] and ours["caption"] == theirs["caption"]
        assert ours["tag_scores"].keys() == theirs["tag_scores"].keys()
        assert np.allclose(list(ours["tag_scores"].values()), list(theirs["tag_scores"].values()), atol=1e-5)
    steered = []
    for backend, model in (("torch", setup["model_dir"]), ("onnx", setup["export_dir"])):
        output = tmp_path / f"steered-{backend}.jsonl"
        assert main(["caption", "--backend", backend, "--model", str(model), str(images / "1.png"), "--tags",
                     "dog | sky", "--num-beams", "2", "--max-length", "12", "--output", str(output)]) == 0
        steered.append(json.loads(output.read_text()))
    assert steered[0]["caption"] == steered[1]["caption"]
    assert steered[0]["tags"] == steered[1]["tags"] == ["dog", "sky"]
    assert steered[0]["tag_scores"] == pytest.approx(steered[1]["tag_scores"], abs=1e-5)


def test_export_command_int8_and_bad_arguments(setup, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["export", "--model", str(setup["model_dir"]), "--output-dir", str(out), "--quantize", "int8"]) == 0
    for name in ("tagger", "text_encoder", "text_decoder"):
        graph = onnx.load(out / f"{name}.onnx").graph
        ops = {node.op_type for node in graph.node}
        assert ops & {"DynamicQuantizeMatMul", "MatMulInteger"}, name
        assert (out / f"{name}.onnx").stat().st_size < (setup["export_dir"] / f"{name}.onnx").stat().st_size
    assert json.loads((out / "onnx_config.json").read_text())["quantize"] == "int8"
    int8 = OnnxTag2Text.from_pretrained(out)
    pixels = setup["pixel_values"].numpy()
    fp32_logits, _ = setup["runtime"].tag_logits(pixel_values=pixels)
    int8_logits, _ = int8.tag_logits(pixel_values=pixels)
    agree = (int8.select_tags(int8_logits) == setup["runtime"].select_tags(fp32_logits))
    assert agree and np.abs(int8_logits - fp32_logits).max() < 0.1 * np.abs(fp32_logits).max()
    assert int8.generate(pixel_values=pixels).shape[0] == 3

    with pytest.raises(ModelSourceError, match="--model .*no model directory"):
        from tag2text.hub import export_command
        from tag2text.hub.cli import build_parser

        export_command.run(build_parser("export").parse_args(
            ["export", "--model", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "x")]))
    capsys.readouterr()
    assert main(["export", "--model", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "x")]) == 2
    assert main(["export", "--model", str(setup["model_dir"]), "--output-dir", str(tmp_path / "y"),
                 "--opset", "11"]) == 2
    nowhere = tmp_path / "nowhere"
    assert capsys.readouterr().err.splitlines() == [
        f"tag2text export: error: --model {nowhere}: no model directory at {nowhere}",
        "tag2text export: error: argument --opset: must be at least 18, got 11",
    ]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@torch.no_grad()
def test_decoder_reads_the_cross_keys_from_a_filled_cache_without_encoder_states(model):
    """The decoder graph's contract: after the cache holds the cross-attention keys and values (projected once
    per image, as the encoder graph outputs them), a step needs no encoder states; without either it refuses."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    text = model.config.text_config
    generator = torch.Generator().manual_seed(4)
    states = torch.randn(2, 5, text.hidden_size, generator=generator)
    ids = torch.randint(5, text.vocab_size, (2, 3), generator=generator)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    model.text_decoder(ids[:, :2], None, states, cache=cache)
    want = model.text_decoder(ids[:, 2:], None, states, cache=cache)[0]
    cross = []
    for layer in model.text_decoder.bert.encoder.layer:  # the projections, computed here by hand
        attention = layer.crossattention.self
        heads = attention.num_attention_heads
        key, value = (torch.nn.functional.linear(states, p.weight, p.bias).view(2, 5, heads, -1).transpose(1, 2)
                      for p in (attention.key, attention.value))
        cross.append((key, value))
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache(ddp_cache_data=cross))
    model.text_decoder(ids[:, :2], None, None, cache=cache)
    got = model.text_decoder(ids[:, 2:], None, None, cache=cache)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cross-attention needs encoder_hidden_states"):
        model.text_decoder(ids, None, None, cache=EncoderDecoderCache(DynamicCache(), DynamicCache()))


def test_beam_top_k_equals_a_full_stable_sort_with_ties_and_nan():
    """The beam search's partial top-k picks what sorting every row would: value descending, lower index first on
    ties (the order the parity tests with PyTorch rely on), -inf and NaN included."""
    from tag2text.onnx import _top_k

    rng = np.random.default_rng(0)
    for trial in range(600):
        rows, width = int(rng.integers(1, 6)), int(rng.integers(1, 80))
        k = int(rng.integers(1, width + 1))
        if trial % 2:  # few distinct values: ties at the k-th value are common
            values = rng.integers(-3, 3, (rows, width)).astype(np.float32)
        else:
            values = rng.standard_normal((rows, width)).astype(np.float32)
        if trial % 5 == 0:
            values[0, 0] = -np.inf
        if trial % 7 == 0:
            values[-1, -1] = np.nan
        expected = np.argsort(-values, axis=-1, kind="stable")[:, :k]
        np.testing.assert_array_equal(_top_k(values, k), expected)
