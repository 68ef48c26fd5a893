"""Parity of the converted model with the ORIGINAL Tag2Text implementation.

tests/fixtures/original_tiny/ holds a tiny random original model (original key names, original config files,
vocab and tag list) and the outputs the original code computed from it (transformers 4.26.1; see its README).
Here that state dict goes through the real converter into a saved directory, which is loaded back and
compared with those golden values, in the expected-slice style of transformers' integration tests.

Beam search: ``model.generate`` scores finished beams as current transformers does (log-probability over
generated tokens); the original's transformers 4.26 divided by the full length including the 4-token prompt.
``tag2text.hub.generate_like_original`` reproduces the original rule and must match every golden beam output;
``model.generate`` must agree where the two rules agree and otherwise pick the beam its own rule prefers.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tag2text import Tag2TextForCaptioning, Tag2TextProcessor
from tag2text.hub import convert_checkpoint, generate_like_original

FIXTURE = Path(__file__).parent / "fixtures" / "original_tiny"
CASES = {"batch": slice(0, 2), "img0": slice(0, 1), "img1": slice(1, 2)}
ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny matrices: thread wake-ups cost more than the work, badly so on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted_tiny")
    convert_checkpoint(
        out,
        checkpoint=FIXTURE / "original_state_dict.safetensors",
        tag_list=FIXTURE / "tag_list.txt",
        vision_config=FIXTURE / "swin_config.json",
        med_config=FIXTURE / "med_config.json",
        q2l_config=FIXTURE / "q2l_config.json",
        tokenizer=FIXTURE / "vocab.txt",
    )
    return out


@pytest.fixture(scope="module")
def converted(converted_dir):
    return Tag2TextForCaptioning.from_pretrained(converted_dir).eval()


@pytest.fixture(scope="module")
def converted_processor(converted_dir):
    return Tag2TextProcessor.from_pretrained(converted_dir)


@pytest.fixture(scope="module")
def golden():
    return load_file(FIXTURE / "golden.safetensors")


@pytest.fixture(scope="module")
def golden_info():
    return json.loads((FIXTURE / "golden.json").read_text())


def pixels(golden, case):
    # Stored as float16 (every value exact); the original ran on the float32 conversion.
    return golden["pixel_values"][CASES[case]].float()


def max_diff(actual, expected):
    return (actual.float() - expected.float()).abs().max().item()


def strip_padding(ids, eos=102):
    """Rows as lists, cut after the first [SEP] past the prompt: the original pads finished rows with [PAD] (0),
    current generate with the eos id when pad is 0."""
    rows = []
    for row in ids.tolist():
        cut = next((i + 1 for i, token in enumerate(row) if i >= 4 and token == eos), len(row))
        rows.append(row[:cut])
    return rows


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_visual_tags_and_interaction_encoder(converted, golden, golden_info, case):
    image_embeds = converted.get_image_embeddings(pixels(golden, case))
    assert image_embeds.shape == golden[f"image_embeds_{case}"].shape
    assert max_diff(image_embeds, golden[f"image_embeds_{case}"]) < ATOL

    logits = converted.get_tag_logits(image_embeds)
    assert max_diff(logits, golden[f"tag_logits_{case}"]) < ATOL

    tags = golden_info["tags"]
    assert converted.select_tags(logits, exclude_caption_excluded=False) == tags["fired_before_delete_indices"][case]
    selected = converted.select_tags(logits)
    assert selected == tags["predicted_tag_indices"][case]
    names = [" | ".join(converted.config.tag_names[i] for i in ids) for ids in selected]
    assert names == tags["predicted_tags"][case]

    ids, mask = converted.build_tag_input_ids(selected)
    assert torch.equal(ids, golden[f"tag_input_ids_{case}"])
    assert torch.equal(mask, golden[f"tag_attention_mask_{case}"])

    states = converted.encode_tags(ids, mask, image_embeds)[0]
    assert max_diff(states, golden[f"tag_encoder_hidden_{case}"]) < ATOL


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_teacher_forced_decoder_logits(converted, golden, case):
    _, logits, *_ = converted.decode_text(
        golden[f"decoder_input_ids_{case}"],
        golden[f"tag_encoder_hidden_{case}"],
        attention_mask=golden[f"decoder_attention_mask_{case}"],
    )
    assert logits.shape == golden[f"decoder_logits_{case}"].shape
    assert max_diff(logits, golden[f"decoder_logits_{case}"]) < ATOL


def test_processor_encodes_tags_and_decodes_captions_like_the_original(converted_processor, golden, golden_info):
    user_tags = golden_info["inputs"]["user_tags"]["batch"]
    encoded = converted_processor.encode_tags(user_tags)
    assert torch.equal(encoded["tag_input_ids"], golden["usertags_tag_input_ids_batch"])
    assert torch.equal(encoded["tag_attention_mask"], golden["usertags_tag_attention_mask_batch"])
    for name, case in golden_info["generate_cases"].items():
        captions = converted_processor.decode_captions(golden[case["generated_ids_tensor"]])
        assert captions == case["captions"], name


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_greedy_caption_token_for_token(converted, golden, golden_info, case):
    generated = converted.generate(pixels(golden, case), num_beams=1, max_length=30, min_length=10)
    assert torch.equal(generated, golden[f"generated_ids_greedy_{case}"])
    user_tags = golden_info["inputs"]["user_tags"][case]
    steered = converted.generate(pixels(golden, case), tags=user_tags, num_beams=1, max_length=30, min_length=10)
    assert torch.equal(steered, golden[f"generated_ids_usertags_greedy_{case}"])


@pytest.mark.parametrize("case", CASES)
@torch.no_grad()
def test_beam_search_with_the_original_scoring(converted, converted_processor, golden, golden_info, case):
    generated = generate_like_original(converted, pixels(golden, case), num_beams=3, max_length=30, min_length=10)
    assert torch.equal(generated, golden[f"generated_ids_beam_{case}"])
    user_tags = golden_info["inputs"]["user_tags"][case]
    steered = generate_like_original(converted, pixels(golden, case), tags=user_tags,
                                     tokenizer=converted_processor.tokenizer, num_beams=3)
    assert torch.equal(steered, golden[f"generated_ids_usertags_beam_{case}"])
    # Greedy goes through model.generate and agrees too.
    greedy = generate_like_original(converted, pixels(golden, case), num_beams=1)
    assert torch.equal(greedy, golden[f"generated_ids_greedy_{case}"])
    # The same rule through the model's own generate (part of the Hub payload).
    through_generate = converted.generate(pixels(golden, case), beam_scoring="original", num_beams=3,
                                          max_length=30, min_length=10)
    assert torch.equal(through_generate, golden[f"generated_ids_beam_{case}"])
    steered_generate = converted.generate(pixels(golden, case), tags=user_tags, beam_scoring="original",
                                          tokenizer=converted_processor.tokenizer, num_beams=3)
    assert torch.equal(steered_generate, golden[f"generated_ids_usertags_beam_{case}"])


def sequence_log_prob(model, states, rows):
    """Sum of the log-probabilities of each row's tokens after the 4-token prompt (teacher forced), all rows
    decoded from the same (1, length, hidden) encoder states."""
    totals = []
    for row in rows:
        ids = torch.tensor([row])
        _, logits, *_ = model.decode_text(ids, states)
        log_probs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        picked = log_probs.gather(1, ids[0, 1:, None])[:, 0]
        totals.append(picked[3:].sum().item())
    return totals


@pytest.mark.parametrize("case", ["img0", "img1"])
@torch.no_grad()
def test_default_beam_search_uses_the_current_length_rule(converted, golden, case):
    generated = converted.generate(pixels(golden, case), num_beams=3, max_length=30, min_length=10)
    ours, theirs = strip_padding(generated)[0], strip_padding(golden[f"generated_ids_beam_{case}"])[0]
    if case == "img0":
        # Both rules run to max_length here, and pick the same beam (the fixture README notes this case).
        assert ours == theirs
        return
    assert ours != theirs  # the documented difference: img1 finishes at another length under each rule
    states = golden[f"tag_encoder_hidden_{case}"]
    ours_lp, theirs_lp = sequence_log_prob(converted, states, [ours, theirs])
    # Current rule: divide by the generated tokens ([SEP] included); original: by the full length, prompt
    # included and a final [SEP] not counted.
    def original_length(row):
        return len(row) - 1 if row[-1] == 102 else len(row)

    assert ours_lp / (len(ours) - 4) >= theirs_lp / (len(theirs) - 4)
    assert theirs_lp / original_length(theirs) >= ours_lp / original_length(ours)


@torch.no_grad()
def test_training_losses(converted, converted_processor, golden, golden_info):
    record = golden_info["training_forward"]
    tokenizer = converted_processor.tokenizer
    # The original's training forward: captions without the prompt, [DEC] over [CLS], the first 4 labels masked.
    encoded = tokenizer(record["train_captions"], padding="longest", truncation=True, max_length=40,
                        return_tensors="pt")
    input_ids = encoded["input_ids"].clone()
    input_ids[:, 0] = converted.config.text_config.bos_token_id
    labels = input_ids.masked_fill(encoded["attention_mask"] == 0, -100)
    labels[:, :4] = -100
    tag_ids, tag_mask = converted.build_tag_input_ids(record["train_tag_indices"])
    output = converted(
        pixel_values=pixels(golden, "batch"),
        input_ids=input_ids,
        attention_mask=encoded["attention_mask"],
        tag_input_ids=tag_ids,
        tag_attention_mask=tag_mask,
        labels=labels,
        tag_targets=golden["train_tag_multi_hot"],
    )
    assert abs(output.loss_lm.item() - record["loss_t2t"]) < ATOL
    assert abs(output.loss_tag.item() - record["loss_tag"]) < ATOL * abs(record["loss_tag"])
