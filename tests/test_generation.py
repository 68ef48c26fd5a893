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


def _original_tag_text(tokenizer, texts, length=40):
    """The original's tag text: the tokenizer on the joined names, then [ENC] over [CLS]."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    ids = encoded["input_ids"].clone()
    ids[:, 0] = tokenizer.convert_tokens_to_ids("[ENC]")
    return ids, encoded["attention_mask"]


def test_model_tag_text_is_the_original_tokenization(model, processor, tokenizer):
    names = [["cat", "fire hydrant", "red"], [], ["tennis racket"]]
    index = {n: i for i, n in enumerate(model.config.tag_names)}
    ids, mask = model.build_tag_input_ids([[index[n] for n in row] for row in names])
    expected_ids, expected_mask = _original_tag_text(tokenizer, [" | ".join(row) for row in names])
    assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)
    from_processor = processor.encode_tags(names)
    assert torch.equal(from_processor["tag_input_ids"], expected_ids)


def test_long_tag_text_is_truncated_like_the_tokenizer(model, processor, tokenizer):
    many = list(range(model.config.num_tags)) * 3
    ids, mask = model.build_tag_input_ids([many])
    names = " | ".join(model.config.tag_names[i] for i in many)
    expected_ids, _ = _original_tag_text(tokenizer, [names])
    assert ids.shape[1] == model.config.max_tag_length
    assert torch.equal(ids, expected_ids)


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


@pytest.mark.parametrize("tags, batch_size, expected", [
    ("dog | sky", 1, [["dog", "sky"]]),  # one joined string: one image
    (["dog", " sky "], 1, [["dog", "sky"]]),  # a flat list of names: one image
    ([["dog", " "], "sky |  | grass"], 2, [["dog"], ["sky", "grass"]]),  # one entry per image, blanks dropped
    (("fire hydrant | cat", ["red"]), 2, [["fire hydrant", "cat"], ["red"]]),
])
def test_user_tags_are_read_one_way(processor, model, pixel_values, tags, batch_size, expected):
    """The processor owns the reading of user tags; generate(tags=...) reads them by the same function."""
    assert processor.parse_tags(tags, batch_size) == expected
    out = model.generate(pixel_values[:batch_size], tags=tags, return_dict_in_generate=True, **GREEDY)
    assert out.tags == expected


def test_user_tags_in_a_wrong_form_are_refused(processor):
    with pytest.raises(ValueError, match="tags has 2 entries but there are 3 images"):
        processor.parse_tags([["dog"], "sky"], 3)
    with pytest.raises(TypeError, match="each image's tags must be a string or a list of strings, got int"):
        processor.parse_tags([["dog"], 7], 2)


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


class VisionCalls:
    """Counts the images that pass through the vision tower (a forward hook on ``model.vision_model``)."""

    def __init__(self, model):
        self.images = 0
        self.handle = model.vision_model.register_forward_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs, output):
        pixel_values = kwargs.get("pixel_values", args[0] if args else None)
        self.images += pixel_values.shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_one_call_gives_tags_probabilities_and_captions_from_one_vision_pass(model, pixel_values):
    with VisionCalls(model) as calls:
        out = model.generate(pixel_values, return_dict_in_generate=True, **GREEDY)
    assert calls.images == pixel_values.shape[0]  # each image once through the tower
    reference = model.get_tag_logits(model.get_image_embeddings(pixel_values))
    torch.testing.assert_close(out.tag_logits, reference)
    torch.testing.assert_close(out.tag_probs, torch.sigmoid(reference))
    assert out.tags == [[model.config.tag_names[i] for i in (0, 5, 9)]] * 3
    torch.testing.assert_close(out.image_embeds, model.get_image_embeddings(pixel_values))
    assert torch.equal(out.sequences, model.generate(pixel_values, **GREEDY))
    # given tags: the tagging head is skipped unless its probabilities are asked for
    steered = model.generate(pixel_values, tags=["dog"] * 3, return_dict_in_generate=True, **GREEDY)
    assert steered.tag_logits is None and steered.tags == [["dog"]] * 3
    scored = model.generate(pixel_values, tags=["dog"] * 3, return_dict_in_generate=True, output_tag_logits=True,
                            **GREEDY)
    torch.testing.assert_close(scored.tag_logits, reference)


def test_the_pipeline_sees_each_image_once(model, processor):
    from tag2text.pipeline_tag2text import Tag2TextCaptionPipeline

    captioner = Tag2TextCaptionPipeline(model=model, processor=processor)
    image = tiny_factory.draw_image(0)
    with VisionCalls(model) as calls:
        result = captioner(image, **GREEDY)
    assert calls.images == 1
    expected = processor.decode_captions(model.generate(processor(images=image)["pixel_values"], **GREEDY))
    assert result == [{"generated_text": expected[0], "tags": ["cat", "grass", "red"]}]


def test_the_evaluation_sees_each_image_once(model, processor, tmp_path):
    from tag2text.training.evaluation import Tag2TextEvaluator

    records = []
    for seed in range(3):
        path = tmp_path / f"{seed}.png"
        tiny_factory.draw_image(seed).save(path)
        records.append({"image": str(path), "captions": ["a red cat", "a cat on the grass"], "tag_ids": [0, 5],
                        "index": seed})
    evaluator = Tag2TextEvaluator(processor, batch_size=2, meteor=False, progress=False, generate_kwargs=GREEDY)
    with VisionCalls(model) as calls:
        result = evaluator.evaluate(model, records)
    assert calls.images == len(records)
    pixel_values = processor(images=[r["image"] for r in records])["pixel_values"]
    captions = processor.decode_captions(model.generate(pixel_values, **GREEDY))
    assert [p["caption"] for p in result.predictions] == captions
    assert [p["tags"] for p in result.predictions] == [["cat", "grass", "red"]] * 3
    assert {"tag_mAP", "retrieval_txt_r1", "retrieval_img_r1"} <= set(result.metrics)  # all three tasks ran
