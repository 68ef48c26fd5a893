"""tag2text export on RAM and RAM++ and the onnxruntime tagger: the tiny fixtures (made with the original code)
convert, export through the CLI, and the graph gives the PyTorch model's logits within 1e-4 and the original's
(golden) logits within 1e-4 at batch 1 and 2, its probabilities, and the same tags (English, Chinese, class ids)
as ``model.tag()`` and the original's strings; the int8 copy keeps the logits close and most tags; ``tag2text
caption --backend onnx`` on the PNGs writes the rows the PyTorch model gives on the same images."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tag2text import RamForImageTagging, RamPlusForImageTagging, Tag2TextImageProcessor
from tag2text.hub.cli import main as cli_main
from tag2text.hub.onnx_export import quantize_export
from tag2text.onnx_ram import OnnxRamError, OnnxRamTagger
from tag2text.tag_output import tag_scores

FIXTURE = Path(__file__).parent / "fixtures" / "ram_tiny"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text(encoding="utf-8"))
CLASSES = {"ram": RamForImageTagging, "ram_plus": RamPlusForImageTagging}
IMAGES = [FIXTURE / "image0.png", FIXTURE / "image1.png"]


def convert_arguments(family, out):
    files = {"--vision-config": "swin_config.json", "--med-config": "med_config.json",
             "--q2l-config": "q2l_config.json", "--tag-list": "tag_list.txt",
             "--tag-list-chinese": "tag_list_chinese.txt", "--checkpoint": f"{family}_state_dict.safetensors",
             "--threshold-file": f"{family}_tag_list_threshold.txt"}
    arguments = ["--log-level", "WARNING", "convert", "--output-dir", str(out)]
    for option, name in files.items():
        arguments += [option, str(FIXTURE / name)]
    return arguments


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (model directory, float32 export, int8 export)."""
    directories = {}
    for family in CLASSES:
        root = tmp_path_factory.mktemp(family)
        assert cli_main(convert_arguments(family, root / "model")) == 0
        assert cli_main(["--log-level", "WARNING", "export", "--model", str(root / "model"),
                         "--output-dir", str(root / "onnx")]) == 0
        quantize_export(root / "onnx", root / "onnx-int8")
        directories[family] = (root / "model", root / "onnx", root / "onnx-int8")
    return directories


@pytest.fixture(scope="module")
def golden():
    return load_file(FIXTURE / "golden.safetensors")


def torch_model(directory, family):
    return CLASSES[family].from_pretrained(directory).eval()


@pytest.mark.parametrize("family", list(CLASSES))
def test_the_export_directory_holds_the_graph_and_the_label_space(exported, family):
    model_dir, onnx_dir, _ = exported[family]
    manifest = json.loads((onnx_dir / "onnx_config.json").read_text(encoding="utf-8"))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert manifest["family"] == family and manifest["graphs"] == {"tagger": "tagger.onnx"}
    assert manifest["tag_thresholds"] == config["class_thresholds"]
    assert (onnx_dir / "tag_list.txt").read_text(encoding="utf-8").splitlines() == \
        (FIXTURE / "tag_list.txt").read_text(encoding="utf-8").splitlines()
    # byte for byte, the trailing spaces of 19 released Chinese names included
    assert (onnx_dir / "tag_list_chinese.txt").read_bytes() == (FIXTURE / "tag_list_chinese.txt").read_bytes()
    assert not list(onnx_dir.glob("*.py")) and not (onnx_dir / "model.safetensors").exists()
    import onnx

    graph = onnx.load(str(onnx_dir / "tagger.onnx")).graph
    assert [i.name for i in graph.input] == ["pixel_values"]  # the label queries are inside the graph
    assert [o.name for o in graph.output] == ["logits", "probabilities"]


@pytest.mark.parametrize("family", list(CLASSES))
@pytest.mark.parametrize("case", ["img0", "batch"])
def test_float32_graph_matches_pytorch_and_the_original(exported, golden, family, case):
    model_dir, onnx_dir, _ = exported[family]
    pixel_values = golden["pixel_values"].float()[:1 if case == "img0" else 2]
    tagger = OnnxRamTagger.from_pretrained(onnx_dir)
    logits, probabilities = tagger.session.run(None, {"pixel_values": pixel_values.numpy()})
    model = torch_model(model_dir, family)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()
    assert logits.shape == (len(pixel_values), 30)
    assert np.abs(logits - expected).max() < 1e-4
    assert np.abs(logits - golden[f"{family}_logits_{case}"].numpy()).max() < 1e-4
    assert np.abs(probabilities - golden[f"{family}_probs_{case}"].numpy()).max() < 1e-5

    ours, theirs = tagger.tag(pixel_values=pixel_values.numpy()), model.tag(pixel_values)
    assert [o.tag_ids for o in ours] == [t.tag_ids for t in theirs] == GOLDEN[family]["closed_set"][case][
        "selected_indices"]
    assert [o.tags for o in ours] == [t.tags for t in theirs]
    assert [" | ".join(o.tags) for o in ours] == GOLDEN[family]["closed_set"][case]["english"]
    assert [" | ".join(o.tags_zh) for o in ours] == GOLDEN[family]["closed_set"][case]["chinese"]
    for o, t in zip(ours, theirs):
        assert o.tags_zh == t.tags_zh
        assert np.allclose(o.scores, t.scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", list(CLASSES))
def test_one_threshold_for_every_tag(exported, golden, family):
    model_dir, onnx_dir, _ = exported[family]
    pixel_values = golden["pixel_values"].float()
    tagger, model = OnnxRamTagger.from_pretrained(onnx_dir), torch_model(model_dir, family)
    probabilities = golden[f"{family}_probs_batch"].numpy()
    threshold = float(np.sort(probabilities[0])[-5]) - 1e-3  # a value well away from the other probabilities
    ours = tagger.tag(pixel_values=pixel_values.numpy(), threshold=threshold)
    assert [o.tag_ids for o in ours] == [t.tag_ids for t in model.tag(pixel_values, threshold=threshold)]
    assert len(ours[0].tag_ids) >= 5
    with pytest.raises(OnnxRamError, match="threshold"):
        tagger.tag(pixel_values=pixel_values.numpy(), threshold=1.5)


@pytest.mark.parametrize("family", list(CLASSES))
def test_int8_copy_keeps_logits_close_and_most_tags(exported, golden, family):
    _, onnx_dir, int8_dir = exported[family]
    manifest = json.loads((int8_dir / "onnx_config.json").read_text(encoding="utf-8"))
    assert manifest["quantize"] == "int8" and manifest["family"] == family
    assert (int8_dir / "tagger.onnx").stat().st_size < (onnx_dir / "tagger.onnx").stat().st_size
    pixel_values = golden["pixel_values"].float().numpy()
    float32, int8 = OnnxRamTagger.from_pretrained(onnx_dir), OnnxRamTagger.from_pretrained(int8_dir)
    reference, quantized = float32.logits(pixel_values=pixel_values), int8.logits(pixel_values=pixel_values)
    assert not np.array_equal(reference, quantized)  # the weights really are quantized
    assert np.abs(quantized - reference).max() < 0.1  # probabilities move by < 0.025
    # Tags: at least 80% of the union agrees per image (the fixture's margins to the thresholds are ~0.01).
    for ours, theirs in zip(int8.tag(pixel_values=pixel_values), float32.tag(pixel_values=pixel_values)):
        union, common = set(ours.tag_ids) | set(theirs.tag_ids), set(ours.tag_ids) & set(theirs.tag_ids)
        assert len(common) >= 0.8 * len(union)


def expected_rows(model_dir, family):
    """The rows the PyTorch model gives on the PNGs: its processor, its ``tag()``."""
    processor = Tag2TextImageProcessor.from_pretrained(model_dir)
    from PIL import Image

    pixel_values = processor(images=[Image.open(p).convert("RGB") for p in IMAGES], return_tensors="pt")[
        "pixel_values"]
    rows = []
    for path, output in zip(IMAGES, torch_model(model_dir, family).tag(pixel_values)):
        rows.append({"image": str(path), "tags": output.tags, "tags_zh": output.tags_zh,
                     "tag_scores": tag_scores(output.tags, output.scores)})
    return rows


@pytest.mark.parametrize("family", list(CLASSES))
def test_caption_backend_onnx_writes_the_pytorch_rows(exported, family, tmp_path):
    model_dir, onnx_dir, _ = exported[family]
    out = tmp_path / "rows.jsonl"
    assert cli_main(["--log-level", "WARNING", "caption", "--backend", "onnx", "--model", str(onnx_dir),
                     "--batch-size", "2", "--output", str(out), *map(str, IMAGES)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = expected_rows(model_dir, family)
    assert [list(r) for r in rows] == [["image", "tags", "tags_zh", "tag_scores"]] * 2
    assert [(r["image"], r["tags"], r["tags_zh"], list(r["tag_scores"])) for r in rows] == \
        [(r["image"], r["tags"], r["tags_zh"], list(r["tag_scores"])) for r in expected]
    for row, reference in zip(rows, expected):
        assert np.allclose(list(row["tag_scores"].values()), list(reference["tag_scores"].values()), atol=2e-6)
    assert all(row["tags"] for row in rows)


def test_caption_options_that_need_a_decoder_are_refused(exported, tmp_path, capsys):
    _, onnx_dir, _ = exported["ram_plus"]
    for option in (["--tags", "dog | cat"], ["--num-beams", "3"], ["--max-length", "20"]):
        status = cli_main(["caption", "--backend", "onnx", "--model", str(onnx_dir), *option, str(IMAGES[0])])
        err = capsys.readouterr().err.strip()
        assert status == 2 and len(err.splitlines()) == 1 and option[0] in err and "tagging-only" in err, err
