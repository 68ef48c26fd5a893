import json

import pytest
from transformers import AutoConfig, SwinConfig, ViTConfig

import tag2text
from tag2text import Tag2TextConfig, Tag2TextTaggingConfig, Tag2TextTextConfig, preset_config


def test_released_preset_has_released_sizes():
    config = preset_config("tag2text-swin-b-384")
    vision = config.vision_config
    assert isinstance(vision, SwinConfig)
    assert (vision.image_size, vision.embed_dim, list(vision.depths), list(vision.num_heads), vision.window_size) == (
        384, 128, [2, 2, 18, 2], [4, 8, 16, 32], 12)
    assert config.vision_hidden_size == 1024
    assert config.text_config.encoder_hidden_size == 1024
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers, config.text_config.vocab_size) == (
        768, 12, 30524)
    assert (config.tagging_config.num_hidden_layers, config.tagging_config.num_attention_heads) == (2, 4)
    assert config.num_tags == 3429
    assert config.tag_thresholds == {2701: 0.7, 2828: 0.7, 1167: 0.7}
    assert config.caption_excluded_tag_ids == sorted([127, 2961, 3351, 3265, 3338, 3355, 3359])
    assert config.prompt == "a picture of " and config.tag_separator == " | " and config.max_tag_length == 40
    thresholds = config.threshold_list()
    assert thresholds[2701] == 0.7 and thresholds[0] == 0.68


def test_presets_usable_where_a_config_is_asked(tmp_path):
    assert Tag2TextConfig.from_pretrained("tiny").text_config.hidden_size == 32
    with pytest.raises(ValueError, match="unknown Tag2Text preset 'huge'"):
        preset_config("huge")


def test_round_trips(tmp_path, config):
    as_json = json.loads(config.to_json_string())
    assert as_json["tag_thresholds"] == {str(k): v for k, v in config.tag_thresholds.items()}
    config.tag_thresholds = {3: 0.9}
    config.save_pretrained(tmp_path)
    loaded = Tag2TextConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.tag_thresholds == {3: 0.9}
    assert isinstance(loaded.text_config, Tag2TextTextConfig)
    assert isinstance(loaded.tagging_config, Tag2TextTaggingConfig)
    assert loaded.tag_token_ids == config.tag_token_ids
    auto = AutoConfig.from_pretrained(tmp_path)
    assert type(auto) is Tag2TextConfig
    config.save_pretrained(tmp_path / "sub")
    assert Tag2TextConfig.from_pretrained(tmp_path, subfolder="sub").tag_names == config.tag_names


def test_vit_option_and_dict_inputs():
    config = Tag2TextConfig(
        vision_config={"model_type": "vit", "hidden_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
        tagging_config={"num_attention_heads": 2},
        num_tags=5,
    )
    assert isinstance(config.vision_config, ViTConfig)
    assert config.text_config.encoder_hidden_size == 48
    assert config.caption_excluded_tag_ids == [] and config.tag_thresholds == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_tags": 4, "tag_thresholds": {7: 0.5}}, r"tag_thresholds holds tag indices outside \[0, 4\): \[7\]"),
        ({"num_tags": 4, "caption_excluded_tag_ids": [-1]}, "caption_excluded_tag_ids"),
        ({"num_tags": 4, "tag_threshold": 1.5}, "tag_threshold=1.5"),
        ({"tag_names": ["a", "b"], "num_tags": 3}, "num_tags=3 does not match"),
        ({"num_tags": 2, "tag_token_ids": [[1]]}, "tag_token_ids has 1 entries"),
        ({"num_tags": 2, "vision_config": {"model_type": "clip"}}, "vision_config"),
        ({"num_tags": 2, "tagging_config": {"num_hidden_layers": 20}}, "tagging_config.num_hidden_layers=20"),
        ({"num_tags": 2, "tagging_config": {"num_attention_heads": 5}}, "tagging_config.num_attention_heads"),
    ],
)
def test_bad_values_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Tag2TextConfig(**kwargs)


def test_set_tag_vocabulary_records_token_ids(tokenizer):
    config = preset_config("tiny", tokenizer=tokenizer, tag_names=["fire hydrant", "cat"])
    expected = [tokenizer.convert_tokens_to_ids(["fire", "hydrant"]), tokenizer.convert_tokens_to_ids(["cat"])]
    assert config.tag_token_ids == expected
    assert config.tag_separator_token_ids == [tokenizer.convert_tokens_to_ids("|")]
    assert config.prompt_token_ids == tokenizer.convert_tokens_to_ids(["a", "picture", "of"])
    assert config.text_config.bos_token_id == tokenizer.convert_tokens_to_ids("[DEC]")
    assert config.text_config.enc_token_id == tokenizer.convert_tokens_to_ids("[ENC]")
    assert config.text_config.vocab_size == len(tokenizer)
    with pytest.raises(ValueError, match="got 3 tag names for a config with 2 tags"):
        config.set_tag_vocabulary(["a", "b", "c"])


def test_import_exposes_public_names():
    for name in ("Tag2TextConfig", "Tag2TextModel", "Tag2TextForCaptioning", "Tag2TextProcessor"):
        assert hasattr(tag2text, name)
