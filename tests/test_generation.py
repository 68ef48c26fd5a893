import pytest
import torch

import tiny_factory

GREEDY = {"num_beams": 1, "max_new_tokens": 6, "min_new_tokens": 6}


def test_default_generation_config_is_the_released_one(model):
    config = model.generation_config
    assert (config.num_beams, config.max_new_tokens, config.min_new_tokens) == (3, 26, 6)


def test_length_and_prompt(model, pixel_values, tokenizer):
    out = model.generate(pixel_values, **GREEDY)
    assert out.shape == (3, 4 + 6)
    prompt = [tokenizer.convert_tokens_to_ids("[DEC]")] + tokenizer.convert_tokens_to_ids(["a", "picture", "of"])
    assert out[:, :4].tolist() == [prompt] * 3


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cache_does_not_change_tokens(model, pixel_values, num_beams):
    kwargs = dict(num_beams=num_beams, max_new_tokens=8, min_new_tokens=0)
    assert torch.equal(model.generate(pixel_values, **kwargs), model.generate(pixel_values, use_cache=False, **kwargs))


def test_batch_of_n_equals_n_single_runs_with_beam_search(model, pixel_values):
    kwargs = dict(num_beams=3, max_new_tokens=8, min_new_tokens=2)
    batch = model.generate(pixel_values, **kwargs)
    for row in range(pixel_values.shape[0]):
        single = model.generate(pixel_values[row : row + 1], **kwargs)
        assert single[0].tolist() == [t for t in batch[row].tolist()][: single.shape[1]]
        assert all(t == model.config.text_config.pad_token_id for t in batch[row, single.shape[1]:].tolist())


def test_predicted_tags_drive_the_caption_and_are_returned(model, pixel_values, processor):
    out = model.generate(pixel_values, return_dict_in_generate=True, **GREEDY)
    expected = [model.config.tag_names[i] for i in (0, 5, 9)]  # index 15 ('two') fires but is excluded
    assert out.tags == [expected] * 3
    assert out.tag_ids == [[0, 5, 9]] * 3
    assert out.tag_logits.shape == (3, model.config.num_tags)
    # the same caption when the same tags are given explicitly, by name or as tokenized text
    by_name = model.generate(pixel_values, tags=[expected] * 3, **GREEDY)
    tokenized = processor.encode_tags([" | ".join(expected)] * 3)
    by_ids = model.generate(pixel_values, **tokenized, **GREEDY)
    assert torch.equal(out.sequences, by_name) and torch.equal(out.sequences, by_ids)


def test_model_tag_text_matches_the_tokenizer(model, processor):
    names = [["cat", "fire hydrant", "red"], [], ["tennis racket"]]
    index = {n: i for i, n in enumerate(model.config.tag_names)}
    ids, mask = model.build_tag_input_ids([[index[n] for n in row] for row in names])
    expected = processor.encode_tags([" | ".join(row) for row in names])
    assert torch.equal(ids, expected["tag_input_ids"]) and torch.equal(mask, expected["tag_attention_mask"])


def test_long_tag_text_is_truncated_like_the_tokenizer(model, processor):
    many = list(range(model.config.num_tags)) * 3
    ids, mask = model.build_tag_input_ids([many])
    names = " | ".join(model.config.tag_names[i] for i in many)
    expected = processor.encode_tags([names])
    assert ids.shape[1] == model.config.max_tag_length
    assert torch.equal(ids, expected["tag_input_ids"])


def test_user_tags_steer_the_caption(model, pixel_values, tokenizer):
    scored = dict(GREEDY, return_dict_in_generate=True, output_scores=True)
    base = model.generate(pixel_values[:1], **scored)
    steered = model.generate(pixel_values[:1], tags="dog | sky", **scored)
    flat = model.generate(pixel_values[:1], tags=["dog", "sky"], **scored)
    assert torch.equal(steered.sequences, flat.sequences) and steered.tags == [["dog", "sky"]]
    finite = torch.isfinite(base.scores[0])  # eos is masked to -inf by min_new_tokens
    assert (base.scores[0] - steered.scores[0])[finite].abs().max() > 1e-6  # the tags reach the decoder
    with pytest.raises(ValueError, match=r"tags \['purple elephant'\] are not in the model's tag list"):
        model.generate(pixel_values[:1], tags="dog | purple elephant", **GREEDY)
    free = model.generate(pixel_values[:1], tags="dog | purple elephant", tokenizer=tokenizer, **GREEDY)
    assert free.shape == steered.sequences.shape
    with pytest.raises(ValueError, match="tags has 2 entries but there are 3 images"):
        model.generate(pixel_values, tags=["dog", "sky"], **GREEDY)


def test_tag_method_thresholds_and_exclusions(model, pixel_values):
    results = model.tag(pixel_values)
    assert [r.tags for r in results] == [["cat", "grass", "red"]] * 3
    assert all(score > 0.68 for r in results for score in r.scores)
    with_excluded = model.tag(pixel_values, include_excluded=True)
    assert with_excluded[0].tag_ids == [0, 5, 9, 15]
    everything = model.tag(pixel_values, threshold=0.0)
    assert len(everything[0].tags) == model.config.num_tags - 1
    nothing = model.tag(pixel_values, threshold=1.0)
    assert nothing[0].tags == []
    model.config.tag_thresholds = {0: 0.9999}
    assert "cat" not in model.tag(pixel_values)[0].tags
    with pytest.raises(ValueError, match="threshold must be in"):
        model.tag(pixel_values, threshold=2.0)


def test_prompt_from_the_processor(model, pixel_values, processor):
    default = model.generate(pixel_values, **GREEDY)
    prompt = processor(images=[tiny_factory.draw_image(s) for s in range(3)], text=[""] * 3)
    given = model.generate(prompt["pixel_values"], input_ids=prompt["input_ids"],
                           attention_mask=prompt["attention_mask"], **GREEDY)
    assert torch.equal(default, given)
    # prompts of different lengths in one batch decode as they would alone (left padding, positions)
    mixed = processor(images=[tiny_factory.draw_image(0)] * 2, text=["", "a red"])
    together = model.generate(mixed["pixel_values"], input_ids=mixed["input_ids"],
                              attention_mask=mixed["attention_mask"], **GREEDY)
    alone = processor(images=[tiny_factory.draw_image(0)], text=["a red"])
    single = model.generate(alone["pixel_values"], input_ids=alone["input_ids"],
                            attention_mask=alone["attention_mask"], **GREEDY)
    assert together[1].tolist() == single[0].tolist()


def test_sampling_is_reproducible_with_a_seed(model, pixel_values):
    kwargs = dict(do_sample=True, top_p=0.9, num_beams=1, max_new_tokens=6, repetition_penalty=1.1)
    torch.manual_seed(7)
    a = model.generate(pixel_values, **kwargs)
    torch.manual_seed(7)
    b = model.generate(pixel_values, **kwargs)
    assert torch.equal(a, b)


def test_generate_without_token_ids_says_what_to_do(tokenizer, pixel_values):
    config = tiny_factory.make_config(tokenizer)
    config.tag_token_ids = None
    model = tiny_factory.make_model(config)
    with pytest.raises(ValueError, match="set_tag_vocabulary"):
        model.generate(pixel_values, **GREEDY)


def test_beam_reordering_leaves_the_cross_attention_cache_alone(model, pixel_values):
    """Beams only replace beams of their own image, so the cross-attention keys and values need no reordering;
    the captions and scores are those of transformers' full reordering."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    kwargs = dict(num_beams=3, max_new_tokens=8, min_new_tokens=2, return_dict_in_generate=True, output_scores=True)
    fast = model.generate(pixel_values, **kwargs)

    def full_reorder(cache, beam_idx):
        cache.reorder_cache(beam_idx)
        return cache

    model._reorder_cache = full_reorder
    full = model.generate(pixel_values, **kwargs)
    del model._reorder_cache
    assert torch.equal(fast.sequences, full.sequences)
    torch.testing.assert_close(fast.sequences_scores, full.sequences_scores, rtol=0, atol=0)

    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    keys = torch.arange(6.0).view(6, 1, 1, 1)
    cache.self_attention_cache.update(keys.clone(), keys.clone(), 0)
    cache.cross_attention_cache.update(keys.clone(), keys.clone(), 0)
    model._reorder_cache(cache, torch.tensor([2, 2, 0, 5, 3, 3]))
    assert cache.self_attention_cache.layers[0].keys.flatten().tolist() == [2, 2, 0, 5, 3, 3]
    assert cache.cross_attention_cache.layers[0].keys.flatten().tolist() == [0, 1, 2, 3, 4, 5]
