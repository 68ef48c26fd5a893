"""hub.inference's backends and tag_output.result_rows: a mixed batch (each image its own steering tags and
threshold) gives every image the row it gets alone, on onnxruntime as on PyTorch; the image-to-text pipeline
gives each image of a batch its own tags."""

import numpy as np
import pytest
from transformers import pipeline

import tiny_factory
from tag2text.hub.inference import OnnxBackend, TorchBackend, generation_options
from tag2text.tag_output import result_rows, tag_scores
from test_onnx_export import setup, torch_threads  # noqa: F401  (the exported tiny model, built once here)

TAGS = [None, "dog | sky", None, ["cat", "fire hydrant"]]
THRESHOLDS = [None, 0.3, 0.6, None]


def test_result_rows_share_an_image_among_its_captions():
    rows = result_rows([["cat"], []], [{"cat": 0.9}, {}], ["a", "b", "c", "d"])
    assert rows == [{"tags": ["cat"], "tag_scores": {"cat": 0.9}, "caption": "a"},
                    {"tags": ["cat"], "tag_scores": {"cat": 0.9}, "caption": "b"},
                    {"tags": [], "tag_scores": {}, "caption": "c"},
                    {"tags": [], "tag_scores": {}, "caption": "d"}]
    assert result_rows([["a", "b"]]) == [{"tags": ["a", "b"]}]
    assert tag_scores(["a", "b"], [np.float32(0.123456789), 1.0]) == {"a": 0.123457, "b": 1.0}
    with pytest.raises(ValueError, match="3 captions do not divide among 2 images"):
        result_rows([["a"], ["b"]], None, ["x", "y", "z"])


def _four_images(setup):  # noqa: F811
    pixels = setup["pixel_values"]
    return pixels[[0, 1, 2, 0]]  # the first image twice, with different options


def test_onnx_mixed_batch_rows_are_each_images_own(setup):  # noqa: F811
    runtime = setup["runtime"]
    pixels = _four_images(setup).numpy()
    rows = OnnxBackend(runtime).tag_and_caption(pixels, tags=TAGS, thresholds=THRESHOLDS, num_beams=2)
    for index, (tags, threshold) in enumerate(zip(TAGS, THRESHOLDS)):
        alone = pixels[index: index + 1]
        tagged = runtime.tag(pixel_values=alone, threshold=threshold)[0]
        output = runtime.generate(pixel_values=alone, tags=[tags] if tags else None, tag_threshold=threshold,
                                  num_beams=2, return_dict=True)
        assert rows[index] == {
            "tags": list(output["tags"][0]),
            "tag_scores": {name: round(float(score), 6) for name, score in zip(tagged.tags, tagged.scores)},
            "caption": runtime.decode_captions(output["sequences"])[0],
        }, index
    assert rows[1]["tags"] == ["dog", "sky"] and rows[3]["tags"] == ["cat", "fire hydrant"]


def test_torch_and_onnx_backends_give_the_same_rows(setup):  # noqa: F811
    pixels = _four_images(setup)
    torch_backend = TorchBackend(setup["model"], setup["processor"])
    onnx_backend = OnnxBackend(setup["runtime"])
    options = generation_options(torch_backend, num_beams=2, max_length=9)
    assert options == generation_options(onnx_backend, num_beams=2, max_length=9)
    ours = torch_backend.tag_and_caption(pixels, tags=TAGS, thresholds=THRESHOLDS, **options)
    theirs = onnx_backend.tag_and_caption(pixels.numpy(), tags=TAGS, thresholds=THRESHOLDS, **options)
    for a, b in zip(ours, theirs):
        assert a["tags"] == b["tags"] and a["caption"] == b["caption"]
        assert a["tag_scores"] == pytest.approx(b["tag_scores"], abs=1e-5)
    tagged = torch_backend.tag(pixels, THRESHOLDS)
    assert tagged == [{"tags": list(row["tag_scores"]), "tag_scores": row["tag_scores"]} for row in ours]
    assert onnx_backend.tag(pixels.numpy(), THRESHOLDS) == [{"tags": list(row["tag_scores"]),
                                                              "tag_scores": row["tag_scores"]} for row in theirs]


def test_pipeline_batches_give_each_image_its_own_tags(tmp_path, model, processor):
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    captioner = pipeline("image-to-text", model=str(tmp_path), trust_remote_code=True)
    images = [tiny_factory.draw_image(seed) for seed in range(3)]
    alone = [captioner(image) for image in images]
    assert captioner(images, batch_size=2) == alone
    expected = [t.tags for t in model.tag(processor(images=images)["pixel_values"])]
    assert [answer[0]["tags"] for answer in alone] == expected and expected[0] == ["cat", "grass", "red"]
