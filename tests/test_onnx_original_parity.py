"""ONNX export of the tiny model converted from the ORIGINAL code's checkpoint (tests/fixtures/original_tiny).

The export must give what the PyTorch conversion gives (tag logits within 1e-4, identical tags, identical greedy
and beam-3 ids, for a batch of three different images and each image alone) and, where the fixture recorded the
original code's outputs, what the original gave (tag logits, predicted tags, greedy captions with and without
user tags).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tiny_factory
from tag2text import Tag2TextForCaptioning, Tag2TextProcessor
from tag2text.hub import convert_checkpoint, export_onnx
from tag2text.onnx import OnnxTag2Text

FIXTURE = Path(__file__).parent / "fixtures" / "original_tiny"
ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("onnx_original")
    convert_checkpoint(
        root / "converted",
        checkpoint=FIXTURE / "original_state_dict.safetensors",
        tag_list=FIXTURE / "tag_list.txt",
        vision_config=FIXTURE / "swin_config.json",
        med_config=FIXTURE / "med_config.json",
        q2l_config=FIXTURE / "q2l_config.json",
        tokenizer=FIXTURE / "vocab.txt",
    )
    export_onnx(root / "converted", root / "onnx", progress=False)
    model = Tag2TextForCaptioning.from_pretrained(root / "converted").eval()
    processor = Tag2TextProcessor.from_pretrained(root / "converted")
    golden = load_file(FIXTURE / "golden.safetensors")
    third = processor(images=tiny_factory.draw_image(5, size=(60, 44)))["pixel_values"]
    pixels = torch.cat([golden["pixel_values"][:2].float(), third])
    yield {"model": model, "processor": processor, "runtime": OnnxTag2Text.from_pretrained(root / "onnx"),
           "golden": golden, "pixels": pixels}
    torch.set_num_threads(threads)


def cases(pixels):
    yield "batch", pixels
    for index in range(pixels.shape[0]):
        yield f"img{index}", pixels[index: index + 1]


@torch.no_grad()
def test_tag_logits_and_tags(exported):
    model, runtime, golden = exported["model"], exported["runtime"], exported["golden"]
    for case, pixels in cases(exported["pixels"]):
        expected = model.get_tag_logits(model.get_image_embeddings(pixels))
        logits, _ = runtime.tag_logits(pixel_values=pixels.numpy())
        assert np.abs(logits - expected.numpy()).max() < ATOL, case
        assert runtime.select_tags(logits) == model.select_tags(expected), case
        assert [t.tags for t in runtime.tag(pixel_values=pixels.numpy())] == [t.tags for t in model.tag(pixels)]
    # The original code's logits for the two fixture images.
    logits, _ = runtime.tag_logits(pixel_values=exported["pixels"][:2].numpy())
    assert np.abs(logits - golden["tag_logits_batch"].float().numpy()).max() < ATOL


@pytest.mark.parametrize("num_beams", [1, 3])
@torch.no_grad()
def test_generated_ids(exported, num_beams):
    model, runtime = exported["model"], exported["runtime"]
    for case, pixels in cases(exported["pixels"]):
        expected = model.generate(pixels, num_beams=num_beams, max_length=30, min_length=10).numpy()
        ours = runtime.generate(pixel_values=pixels.numpy(), num_beams=num_beams, max_length=30, min_length=10)
        assert np.array_equal(ours, expected), case
        default = model.generate(pixels).numpy()
        assert np.array_equal(runtime.generate(pixel_values=pixels.numpy()), default), case


@torch.no_grad()
def test_greedy_captions_equal_the_original_code(exported):
    runtime, golden = exported["runtime"], exported["golden"]
    import json

    info = json.loads((FIXTURE / "golden.json").read_text())
    for case, rows in (("batch", slice(0, 2)), ("img0", slice(0, 1)), ("img1", slice(1, 2))):
        pixels = exported["pixels"][rows].numpy()
        ours = runtime.generate(pixel_values=pixels, num_beams=1, max_length=30, min_length=10)
        assert np.array_equal(ours, golden[f"generated_ids_greedy_{case}"].numpy()), case
        steered = runtime.generate(pixel_values=pixels, tags=info["inputs"]["user_tags"][case], num_beams=1,
                                   max_length=30, min_length=10)
        assert np.array_equal(steered, golden[f"generated_ids_usertags_greedy_{case}"].numpy()), case
