"""Tag2TextForImageTextRetrieval and zero-shot classification, against computations written out here."""

import pytest
import torch
import torch.nn.functional as F
from transformers import pipeline

import tiny_factory
from tag2text import Tag2TextForCaptioning
from tag2text.modeling_tag2text_retrieval import Tag2TextForImageTextRetrieval
from tag2text.pipeline_tag2text_zero_shot import Tag2TextZeroShotImageClassificationPipeline

TEXTS = ["a cat on the grass", "a red bus", "two dogs", "a tree"]
# The tiny model fires tags 0, 5, 9 and 15 of tiny_factory.TAGS for every image: cat, grass, red, two.
# Tags of each text that are also among them, counted by hand:
MATCHES = [2, 1, 1, 0]


@pytest.fixture
def retrieval(config):
    return tiny_factory.make_model(config, cls=Tag2TextForImageTextRetrieval)


@pytest.fixture
def images():
    return [tiny_factory.draw_image(seed, size=(40 + 8 * seed, 40)) for seed in range(3)]


def _texts(tokenizer, texts=TEXTS):
    return tokenizer(texts, padding=True, return_tensors="pt")


def _by_hand(model, pixel_values, encoded):
    """(ITC logits, ITM match probabilities) one image and one text at a time."""
    cfg = model.config.text_config
    with torch.no_grad():
        embeds = model.get_image_embeddings(pixel_values)
        temperature = model.alignment.logit_temperature.clamp(0.001, 0.5)
        logits = torch.zeros(len(pixel_values), len(encoded["input_ids"]))
        match = torch.zeros_like(logits)
        for j, (ids, mask) in enumerate(zip(encoded["input_ids"], encoded["attention_mask"])):
            ids, mask = ids[None], mask[None]
            cls = model.text_encoder(ids, mask, mode="text")[0][:, 0]
            text = model.text_proj(cls)[0]
            for i in range(len(pixel_values)):
                image = model.vision_proj(embeds[i, 0])
                logits[i, j] = image @ text / (image.norm() * text.norm()) / temperature
                itm_ids = ids.clone()
                itm_ids[0, 0] = cfg.enc_token_id
                hidden = model.text_encoder(itm_ids, mask, embeds[i:i + 1], mode="multimodal")[0][:, 0]
                match[i, j] = torch.softmax(model.itm_head(hidden)[0], dim=0)[1]
    return logits, match


def test_itc_and_itm_scores_equal_an_independent_computation(retrieval, processor, images, tokenizer):
    pixel_values = processor(images=images)["pixel_values"]
    encoded = _texts(tokenizer)
    with torch.no_grad():
        out = retrieval(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                        pixel_values=pixel_values, use_itm_head=True)
    logits, match = _by_hand(retrieval, pixel_values, encoded)
    torch.testing.assert_close(out.logits_per_image, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits_per_text, logits.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.itm_score, match, rtol=1e-5, atol=1e-6)
    assert out.itm_logits.shape == (3, 4, 2)
    assert out.tag_matches is None  # tag weighting is off by default
    plain = retrieval(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                      pixel_values=pixel_values)
    assert plain.itm_logits is None and plain.itm_score is None


def test_tag_weighting_adds_a_bonus_per_shared_tag(retrieval, processor, images, tokenizer):
    pixel_values = processor(images=images)["pixel_values"]
    encoded = _texts(tokenizer)
    with torch.no_grad():
        base = retrieval(**encoded, pixel_values=pixel_values).logits_per_image
        weighted = retrieval(**encoded, pixel_values=pixel_values, tag_match_weight=0.75)
    assert weighted.tag_matches.tolist() == [MATCHES] * 3
    torch.testing.assert_close(weighted.logits_per_image, base + 0.75 * torch.tensor([MATCHES] * 3).float())
    # Tags parsed elsewhere (e.g. by the spaCy tag miner) replace the token-level match.
    given = torch.zeros(4, retrieval.config.num_tags)
    given[3, tiny_factory.TAGS.index("red")] = 1.0
    given[3, tiny_factory.TAGS.index("dog")] = 1.0  # not recognised in the images: no bonus
    with torch.no_grad():
        parsed = retrieval(**encoded, pixel_values=pixel_values, tag_match_weight=1.0, text_tag_labels=given)
    assert parsed.tag_matches.tolist() == [[0, 0, 0, 1]] * 3
    # The config's default weight applies when the call gives none (what pipelines see).
    retrieval.config.retrieval_tag_match_weight = 0.75
    with torch.no_grad():
        default = retrieval(**encoded, pixel_values=pixel_values).logits_per_image
    torch.testing.assert_close(default, weighted.logits_per_image)


def test_multi_token_tags_are_found_as_a_run_of_tokens(retrieval, tokenizer):
    encoded = _texts(tokenizer, ["a fire hydrant", "fire on the hydrant", "a tennis racket and a dog"])
    found = retrieval.tags_in_text(encoded["input_ids"], encoded["attention_mask"])
    names = [{tiny_factory.TAGS[i] for i in torch.nonzero(row).flatten().tolist()} for row in found]
    assert names == [{"fire hydrant"}, set(), {"tennis racket", "dog"}]


def test_loads_a_captioning_checkpoint(tmp_path, model, processor, images, tokenizer):
    model.save_pretrained(tmp_path / "captioning")
    retrieval = Tag2TextForImageTextRetrieval.from_pretrained(tmp_path / "captioning").eval()
    captioning = Tag2TextForCaptioning.from_pretrained(tmp_path / "captioning")
    shared = captioning.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in retrieval.state_dict().items())
    assert not any(k.startswith("text_decoder.") for k in retrieval.state_dict())


def test_bad_inputs_are_named(retrieval, processor, images, tokenizer):
    pixel_values = processor(images=images[:1])["pixel_values"]
    encoded = _texts(tokenizer)
    dec = encoded["input_ids"].clone()
    dec[:, 0] = retrieval.config.text_config.bos_token_id
    with pytest.raises(ValueError, match="must start with \\[CLS\\]"):
        retrieval(input_ids=dec, pixel_values=pixel_values)
    with pytest.raises(ValueError, match="token_type_ids must be all 0"):
        retrieval(input_ids=encoded["input_ids"], pixel_values=pixel_values, token_type_ids=torch.ones_like(dec))
    with pytest.raises(TypeError, match="unexpected arguments \\['labels'\\]"):
        retrieval(**encoded, pixel_values=pixel_values, labels=dec)
    with pytest.raises(ValueError, match="text_tag_labels must have shape"):
        retrieval(**encoded, pixel_values=pixel_values, tag_match_weight=1.0, text_tag_labels=torch.ones(4, 3))


def _label_logits(model, processor, tokenizer, image, labels, template="This is a photo of {}."):
    pixel_values = processor(images=image)["pixel_values"]
    encoded = tokenizer([template.format(label) for label in labels], padding=True, return_tensors="pt")
    return _by_hand(model, pixel_values, encoded)


def test_transformers_zero_shot_pipeline_runs_the_retrieval_model(retrieval, processor, images, tokenizer):
    labels = ["cat", "red bus", "tree", "two dogs"]
    classifier = pipeline("zero-shot-image-classification", model=retrieval, tokenizer=tokenizer,
                          image_processor=processor.image_processor)
    result = classifier(images[1], candidate_labels=labels)
    logits, _ = _label_logits(retrieval, processor, tokenizer, images[1], labels)
    expected = dict(zip(labels, torch.softmax(logits[0], dim=0).tolist()))
    assert [r["label"] for r in result] == sorted(labels, key=lambda label: -expected[label])
    for r in result:
        assert r["score"] == pytest.approx(expected[r["label"]], abs=1e-5)


def test_our_pipeline_takes_the_tag_weight_and_the_itm_head(retrieval, processor, images, tokenizer):
    labels = ["cat", "bus", "tree", "grass"]  # cat and grass are recognised tags
    classifier = Tag2TextZeroShotImageClassificationPipeline(model=retrieval, tokenizer=tokenizer,
                                                             image_processor=processor.image_processor)
    logits, match = _label_logits(retrieval, processor, tokenizer, images[0], labels)
    bonus = torch.tensor([2.0, 0.0, 0.0, 2.0])  # weight 2 x one shared tag
    weighted = dict(zip(labels, torch.softmax(logits[0] + bonus, dim=0).tolist()))
    for r in classifier(images[0], candidate_labels=labels, tag_match_weight=2.0):
        assert r["score"] == pytest.approx(weighted[r["label"]], abs=1e-5)
    log_odds = torch.log(match[0]) - torch.log1p(-match[0])
    by_itm = dict(zip(labels, torch.softmax(log_odds, dim=0).tolist()))
    for r in classifier(images[0], candidate_labels=labels, use_itm_head=True):
        assert r["score"] == pytest.approx(by_itm[r["label"]], abs=1e-5)
