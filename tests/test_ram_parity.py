"""RAM and RAM++ against the original recognize-anything code (7cb804a), on the tiny random checkpoints of
tests/fixtures/ram_tiny (made with the original code; its README says how): the converted models reproduce the
original's image embeddings, RAM++'s description weights, label queries, tagging-head output, logits and
probabilities within 1e-4 for a batch of two and for each image alone, its English and Chinese tag strings exactly
(classes at threshold 1.0 included: they never fire under the strict '>'), and its open-set label embeddings,
logits and tags with the CLIP text tower given as transformers' CLIPTextModelWithProjection."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from tag2text import RamForImageTagging, RamPlusForImageTagging, build_ram_open_set
from tag2text.hub.checkpoint_mapping import expected_shapes
from tag2text.hub.original_config import read_tag_list
from tag2text.hub.ram_checkpoint_mapping import convert_ram_state_dict, detect_family
from tag2text.hub.ram_original_config import ram_config_from_original, read_chinese_tag_list, read_threshold_file
from tag2text.ram_open_set import ram_prompts

FIXTURE = Path(__file__).parent / "fixtures" / "ram_tiny"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text(encoding="utf-8"))
TOLERANCE = 1e-4
FAMILIES = {"ram": RamForImageTagging, "ram_plus": RamPlusForImageTagging}
CASES = {"batch": slice(0, 2), "img0": slice(0, 1), "img1": slice(1, 2)}


@pytest.fixture(scope="module")
def golden():
    return load_file(FIXTURE / "golden.safetensors")


@pytest.fixture(scope="module")
def pixel_values(golden):
    return golden["pixel_values"].float()  # stored as float16; the original ran on .float()


def _convert(family):
    original = load_file(FIXTURE / f"{family}_state_dict.safetensors")
    assert detect_family(original) == family
    names = read_tag_list(FIXTURE / "tag_list.txt")
    config = ram_config_from_original(
        family, names, read_chinese_tag_list(FIXTURE / "tag_list_chinese.txt", len(names)),
        read_threshold_file(FIXTURE / f"{family}_tag_list_threshold.txt", len(names)),
        vision_config=FIXTURE / "swin_config.json", med_config=FIXTURE / "med_config.json",
        q2l_config=FIXTURE / "q2l_config.json",
        descriptions_per_tag=original["label_embed"].shape[0] // len(names))
    result = convert_ram_state_dict(original, expected_shapes(config, FAMILIES[family]), family)
    model = FAMILIES[family](config)
    missing, unexpected = model.load_state_dict(result.state_dict, strict=False)
    return model.eval(), result, missing, unexpected


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def converted(request):
    return request.param, _convert(request.param)


def test_conversion_has_no_missing_or_unexpected_keys(converted):
    family, (model, result, missing, unexpected) = converted
    assert unexpected == []
    # Nothing is left to the model but buffers that transformers' SwinModel computes itself (none are in its
    # state dict on current releases).
    assert all(key.endswith("relative_position_index") for key in missing)
    assert sorted(missing) == sorted(result.computed_keys)
    assert len(result.state_dict) == len(model.state_dict()) - len(missing)
    dropped = {key.rsplit(".", 1)[-1] for key in result.dropped_keys}
    assert dropped <= {"relative_position_index", "attn_mask", "position_ids", "bias"}
    if family == "ram":  # the tag encoder and text decoder are kept, the head runs the encoder's first layers
        assert any(key.startswith("text_decoder.") for key in result.state_dict)
        assert result.tagging_prefix == "tagging_head."
        assert not any(key.startswith("tagging_head.") for key in model.state_dict())
    else:
        assert float(model.reweight_scale.detach()) == 3.0  # the fixture's value, not the constructor's ln(1/0.07)


@pytest.mark.parametrize("case", sorted(CASES))
def test_tensors_match_the_original(converted, golden, pixel_values, case):
    family, (model, *_rest) = converted
    with torch.no_grad():
        output = model(pixel_values=pixel_values[CASES[case]])
    checks = {"label_queries": output.label_queries, "tagging_hidden": output.tagging_hidden_states,
              "logits": output.logits, "probs": torch.sigmoid(output.logits)}
    if case == "batch":
        checks["image_embeds"] = output.image_embeds
    if family == "ram_plus":
        checks["des_weights"] = output.description_weights
    for name, ours in checks.items():
        reference = golden[f"{family}_{name}_{case}"]
        assert ours.shape == reference.shape, name
        difference = (ours - reference).abs().max().item()
        assert difference < TOLERANCE, f"{family} {name} {case}: max abs diff {difference:.3g}"
    if family == "ram_plus" and case == "batch":
        mixed = torch.einsum("bcd,cdk->bck", output.description_weights, model.label_embed.view(30, 5, -1))
        assert (mixed - golden["ram_plus_label_embed_reweight_batch"]).abs().max() < TOLERANCE


@pytest.mark.parametrize("case", sorted(CASES))
def test_tags_match_the_original_exactly(converted, golden, pixel_values, case):
    family, (model, *_rest) = converted
    expected = GOLDEN[family]["closed_set"][case]
    tags = model.tag(pixel_values[CASES[case]])
    assert [t.tag_ids for t in tags] == expected["selected_indices"]
    assert [" | ".join(t.tags) for t in tags] == expected["english"]
    assert [" | ".join(t.tags_zh) for t in tags] == expected["chinese"]  # trailing spaces kept, byte for byte
    selected = golden[f"{family}_selected_{case}"].bool()
    assert [row.nonzero().flatten().tolist() for row in selected] == expected["selected_indices"]


def test_thresholds_and_the_classes_that_never_fire(converted, golden, pixel_values):
    family, (model, *_rest) = converted
    thresholds = torch.tensor(model.config.threshold_list())
    if family == "ram":
        assert torch.equal(thresholds, golden["ram_class_threshold"])
    never = (thresholds == 1.0).nonzero().flatten().tolist()
    assert never  # body, cocktail table, group
    with torch.no_grad():
        probs = torch.sigmoid(model(pixel_values=pixel_values).logits)
    # They score above the thresholds of classes that fire, so only the strict '>' on 1.0 keeps them out.
    fired = [t.tag_ids for t in model.tag(pixel_values)]
    assert any(float(probs[:, i].max()) > min(thresholds[ids].min() for ids in fired if ids) for i in never)
    assert not any(i in ids for ids in fired for i in never)


# -- open set ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip():
    return (CLIPTextModelWithProjection.from_pretrained(FIXTURE / "clip_text").eval(),
            CLIPTokenizer.from_pretrained(FIXTURE / "clip_text"))


def _open_set_model(family, clip):
    model = _convert(family)[0]
    if family == "ram":
        return build_ram_open_set(model, GOLDEN["ram"]["open_set"]["categories"], *clip)
    descriptions = json.loads((FIXTURE / "openset_llm_tag_descriptions.json").read_text(encoding="utf-8"))
    tags = [next(iter(item)) for item in descriptions]
    return build_ram_open_set(model, tags, *clip, descriptions=descriptions)


def test_open_set_texts_are_the_originals():
    categories = GOLDEN["ram"]["open_set"]["categories"]
    assert [text for c in categories for text in ram_prompts(c)] == GOLDEN["ram"]["open_set"]["texts"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_open_set_matches_the_original(family, clip, golden, pixel_values):
    model = _open_set_model(family, clip)
    difference = (model.label_embed - golden[f"{family}_openset_label_embed"]).abs().max().item()
    assert difference < TOLERANCE, f"open-set label embeddings: {difference:.3g}"
    assert model.config.threshold_list() == [0.5] * model.config.num_tags
    for case, rows in CASES.items():
        with torch.no_grad():
            output = model(pixel_values=pixel_values[rows])
        for name, ours in (("logits", output.logits), ("probs", torch.sigmoid(output.logits)),
                           ("label_queries", output.label_queries)):
            assert (ours - golden[f"{family}_openset_{name}_{case}"]).abs().max() < TOLERANCE, (family, name, case)
        if family == "ram_plus":
            assert (output.description_weights - golden[f"ram_plus_openset_des_weights_{case}"]).abs().max() < TOLERANCE
        expected = GOLDEN[family]["open_set"][case]
        tags = model.tag(pixel_values[rows])
        assert [t.tag_ids for t in tags] == expected["selected_indices"]
        assert [" | ".join(t.tags) for t in tags] == expected["english"]
