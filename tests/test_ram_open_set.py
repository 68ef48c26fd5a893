"""Open-set label spaces from Python (tag2text.build_ram_open_set) beyond the original's parity cases: RAM++ tags
with different numbers of descriptions (checked against a per-tag computation), a tag without descriptions, adding
tags to the existing ones (their logits unchanged), save_pretrained/from_pretrained of the result, and the errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

from tag2text import build_ram_open_set
from tag2text.ram_open_set import OpenSetError, clip_text_embeddings
from test_ram_parity import _convert

FIXTURE = Path(__file__).parent / "fixtures" / "ram_tiny"


@pytest.fixture(scope="module")
def clip():
    return (CLIPTextModelWithProjection.from_pretrained(FIXTURE / "clip_text").eval(),
            CLIPTokenizer.from_pretrained(FIXTURE / "clip_text"))


@pytest.fixture(scope="module")
def pixel_values():
    return load_file(FIXTURE / "golden.safetensors")["pixel_values"].float()


def test_uneven_descriptions_and_a_tag_without_any(clip, pixel_values):
    model = _convert("ram_plus")[0]
    descriptions = [{"kayak": ["a small boat", "a kayak on a lake", "paddling"]}, {"lighthouse": ["a tall tower"]}]
    build_ram_open_set(model, ["kayak", "snow globe", "lighthouse"], *clip, descriptions=descriptions)
    assert model.config.description_counts() == [3, 1, 1] and model.label_embed.shape == (5, 512)
    default = clip_text_embeddings(["a photo of a snow globe."], *clip)
    assert torch.allclose(model.label_embed[3], default[0], atol=1e-6)
    with torch.no_grad():
        output = model(pixel_values=pixel_values)
        # Per tag, as the original computes one tag: softmax over its own rows, their weighted sum, the projection.
        pooled = output.image_embeds[:, 0] / output.image_embeds[:, 0].norm(dim=-1, keepdim=True)
        scale = model.reweight_scale.exp()
        rows = [model.label_embed[0:3], model.label_embed[3:4], model.label_embed[4:5]]
        mixed = torch.stack([torch.softmax(scale * pooled @ r.t(), dim=-1) @ r for r in rows], dim=1)
        expected = torch.relu(model.wordvec_proj(mixed))
    assert torch.allclose(output.label_queries, expected, atol=1e-5)
    assert torch.allclose(output.description_weights[:, 0].sum(-1), torch.ones(2), atol=1e-6)
    assert (output.description_weights[:, 1:, 1:] == 0).all()  # padding rows get no weight
    assert model.config.threshold_list() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("family", ["ram", "ram_plus"])
def test_added_tags_keep_the_old_ones_and_the_directory_reloads(family, clip, pixel_values, tmp_path):
    model = _convert(family)[0]
    with torch.no_grad():
        before = model(pixel_values=pixel_values).logits
    old_chinese = list(model.config.tag_names_chinese)
    descriptions = {"kayak": ["a small boat", "a kayak on a lake"]} if family == "ram_plus" else None
    build_ram_open_set(model, ["kayak", "Zeppelin"], *clip, descriptions=descriptions, threshold=0.6, add=True)
    assert model.config.num_tags == 32 and model.config.tag_names[-2:] == ["kayak", "Zeppelin"]
    assert model.config.tag_names_chinese == old_chinese + ["kayak", "Zeppelin"]
    assert model.config.threshold_list()[-2:] == [0.6, 0.6]
    with torch.no_grad():
        after = model(pixel_values=pixel_values).logits
    assert after.shape == (2, 32) and torch.allclose(after[:, :30], before, atol=1e-5)
    model.save_pretrained(tmp_path / "open")
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "open").eval()
    assert loaded.config.tag_names == model.config.tag_names
    if family == "ram_plus":
        saved = json.loads((tmp_path / "open" / "config.json").read_text())
        assert saved["descriptions_per_tag"] == [5] * 30 + [2, 1]
    with torch.no_grad():
        assert torch.allclose(loaded(pixel_values=pixel_values).logits, after, atol=1e-6)
    assert [t.tags for t in loaded.tag(pixel_values)] == [t.tags for t in model.tag(pixel_values)]


def test_errors_name_the_problem(clip):
    model = _convert("ram")[0]
    with pytest.raises(OpenSetError, match="empty"):
        build_ram_open_set(model, [], *clip)
    with pytest.raises(OpenSetError, match="more than once.*kayak"):
        build_ram_open_set(model, ["kayak", "boat", "kayak"], *clip)
    with pytest.raises(OpenSetError, match="already has.*cat"):
        build_ram_open_set(model, ["cat"], *clip, add=True)
    with pytest.raises(OpenSetError, match="RAM\\+\\+ input"):
        build_ram_open_set(model, ["kayak"], *clip, descriptions={"kayak": ["a boat"]})
    narrow = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=1514, hidden_size=32, intermediate_size=37,
                                                        num_hidden_layers=1, num_attention_heads=2,
                                                        projection_dim=16, eos_token_id=1513))
    with pytest.raises(OpenSetError, match="projection width is 16.*512"):
        build_ram_open_set(model, ["kayak"], narrow, clip[1])
    assert model.config.num_tags == 30  # nothing changed
