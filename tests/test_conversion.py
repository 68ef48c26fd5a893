"""The converter: key mapping and its errors, original config files, checkpoint files, the CLI and the
complete output directory, downloads when offline, and the full-size key layout with a strict load."""

import argparse
import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, pipeline

import tiny_factory
from tag2text import Tag2TextForCaptioning, Tag2TextProcessor, build_tokenizer, preset_config
from tag2text.hub import (
    RELEASED_CHECKPOINT_URL,
    CheckpointConversionError,
    CheckpointDownloadError,
    OriginalConfigError,
    config_from_original,
    convert_checkpoint,
    convert_state_dict,
    expected_shapes,
    load_converted_state_dict,
    load_original_checkpoint,
    read_tag_list,
)
from tag2text.hub.cli import main as cli_main
from tag2text.hub.conversion import download_released_tag_list
from tag2text.version_compat import swin_block_parameter_names

FIXTURE = Path(__file__).parent / "fixtures" / "original_tiny"
NEW_KEYS = ["vision_proj.weight", "vision_proj.bias", "text_proj.weight", "text_proj.bias", "itm_head.weight",
            "itm_head.bias", "alignment.logit_temperature"]
CONFIG_FILES = dict(vision_config=FIXTURE / "swin_config.json", med_config=FIXTURE / "med_config.json",
                    q2l_config=FIXTURE / "q2l_config.json")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: thread wake-ups cost more than the work
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def original():
    return load_file(FIXTURE / "original_state_dict.safetensors")


@pytest.fixture(scope="module")
def fixture_tokenizer():
    return build_tokenizer(FIXTURE / "vocab.txt")


@pytest.fixture(scope="module")
def tiny_original_config(fixture_tokenizer):
    return config_from_original(read_tag_list(FIXTURE / "tag_list.txt"), tokenizer=fixture_tokenizer, **CONFIG_FILES)


@pytest.fixture(scope="module")
def shapes(tiny_original_config):
    return expected_shapes(tiny_original_config)


# -- mapping ---------------------------------------------------------------------------------------------------


def test_mapping_fills_every_tensor_and_lists_what_it_did(original, shapes):
    result = convert_state_dict(original, shapes)
    assert result.new_keys == NEW_KEYS
    assert all(key.endswith("relative_position_index") for key in result.computed_keys)
    dropped = set(result.dropped_keys)
    assert dropped == {k for k in original if k.endswith(("relative_position_index", "attn_mask", "position_ids"))} | {
        "text_decoder.cls.predictions.decoder.bias"}
    assert set(result.state_dict) | set(result.new_keys) | set(result.computed_keys) == set(shapes)
    assert result.tagging_prefix == "tagging_head."
    # qkv rows are [q; k; v]
    qkv = original["visual_encoder.layers.1.blocks.1.attn.qkv.weight"]
    prefix = "vision_model.encoder.layers.1.blocks.1."
    names = swin_block_parameter_names()  # the installed transformers' Swin names (they changed within 5.x)
    split = [result.state_dict[prefix + names[n] + ".weight"] for n in ("query", "key", "value")]
    assert torch.equal(torch.cat(split), qkv)
    assert torch.equal(result.state_dict["tagging_head.classifier_weight"], original["fc.W"][0])
    assert torch.equal(result.state_dict["tagging_head.classifier_bias"], original["fc.b"][0])
    # the tagging head's layers are the interaction encoder's first layers
    assert torch.equal(result.state_dict["text_encoder.encoder.layer.1.crossattention.self.key.weight"],
                       original["tagging_head.encoder.layer.1.crossattention.self.key.weight"])
    assert result.warnings == []


def test_checkpoint_files_wrappers_and_vision_multi_names(original, shapes, tmp_path):
    reference = convert_state_dict(original, shapes).state_dict
    renamed = {k.replace("tagging_head.", "vision_multi."): v for k, v in original.items()}
    torch.save({"model": renamed, "epoch": 3, "optimizer": {"state": {0: {"step": torch.tensor(1.0)}}}},
               tmp_path / "wrapped.pth")
    torch.save({"module." + k: v for k, v in original.items()}, tmp_path / "ddp.pth")
    for name in ("wrapped.pth", "ddp.pth"):
        result = convert_state_dict(load_original_checkpoint(tmp_path / name), shapes)
        assert set(result.state_dict) == set(reference)
        assert all(torch.equal(result.state_dict[k], reference[k]) for k in reference), name
    assert convert_state_dict(renamed, shapes).tagging_prefix == "vision_multi."


def test_pickled_objects_are_refused(original, tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"model": original, "config": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointConversionError, match="weights_only=True") as error:
        load_original_checkpoint(path)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_original_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointConversionError, match="garbage.pth"):
        load_original_checkpoint(tmp_path / "garbage.pth")


def test_errors_list_every_offending_key(original, shapes):
    broken = dict(original)
    broken["extra.weight"] = torch.zeros(3)
    del broken["tag_encoder.encoder.layer.1.attention.self.query.bias"]
    broken["text_decoder.cls.predictions.transform.dense.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointConversionError) as error:
        convert_state_dict(broken, shapes)
    message = str(error.value)
    assert "original tensors not used (1): extra.weight" in message
    assert "model tensors not filled (1): text_encoder.encoder.layer.1.attention.self.query.bias" in message
    assert "text_decoder.cls.predictions.transform.dense.weight: checkpoint (5, 5)" in message
    # a tagging head with self-attention is not what the original builds
    extra = dict(original, **{"tagging_head.encoder.layer.0.attention.self.query.weight": torch.zeros(32, 32)})
    with pytest.raises(CheckpointConversionError, match="tagging_head.encoder.layer.0.attention.self.query.weight"):
        convert_state_dict(extra, shapes)


def test_tagging_head_copy_wins_over_a_different_tag_encoder_value(original, shapes, caplog):
    changed = dict(original)
    key = "encoder.layer.0.intermediate.dense.weight"
    changed["tag_encoder." + key] = original["tag_encoder." + key] + 1
    with caplog.at_level(logging.WARNING, logger="tag2text.hub.checkpoint_mapping"):
        result = convert_state_dict(changed, shapes)
    assert "tag_encoder." + key in caplog.text
    assert result.warnings and "tag_encoder." + key in result.warnings[0]
    assert torch.equal(result.state_dict["text_encoder." + key], original["tagging_head." + key])
    # without any tagging-head copy the tied tag_encoder tensors are used
    alone = {k: v for k, v in original.items() if not k.startswith("tagging_head.")}
    assert torch.equal(convert_state_dict(alone, shapes).state_dict["text_encoder." + key],
                       original["tag_encoder." + key])


def test_tied_tensors_must_agree(original, shapes):
    for key, other in (("text_decoder.cls.predictions.decoder.bias", "text_decoder.cls.predictions.bias"),
                       ("text_decoder.cls.predictions.decoder.weight",
                        "text_decoder.bert.embeddings.word_embeddings.weight")):
        changed = dict(original, **{key: original[key] + 1})
        with pytest.raises(CheckpointConversionError, match=key) as error:
            convert_state_dict(changed, shapes)
        assert other in str(error.value)
    both = dict(original)
    name = "encoder.layer.1.output.dense.bias"
    both["vision_multi." + name] = original["tagging_head." + name] + 1
    with pytest.raises(CheckpointConversionError, match="vision_multi"):
        convert_state_dict(both, shapes)


def test_one_tensor_under_both_tied_names_converts_even_with_nan(original, shapes):
    """torch.load keeps the original's tie as one tensor under two names; NaN in it (as in uninitialised
    memory) compares unequal to itself, yet the two names are the same tensor and so agree."""
    bias = original["text_decoder.cls.predictions.bias"].clone()
    bias[0] = float("nan")
    tied = dict(original, **{"text_decoder.cls.predictions.bias": bias,
                             "text_decoder.cls.predictions.decoder.bias": bias})
    result = convert_state_dict(tied, shapes)
    assert "text_decoder.cls.predictions.decoder.bias" in result.dropped_keys
    separate = dict(tied, **{"text_decoder.cls.predictions.decoder.bias": bias.clone()})
    with pytest.raises(CheckpointConversionError, match="decoder.bias"):
        convert_state_dict(separate, shapes)  # separate copies must hold equal values; NaN never does


def test_strict_load_accepts_only_the_new_parameters_as_missing(original, tiny_original_config, shapes):
    result = convert_state_dict(original, shapes)
    model = Tag2TextForCaptioning(tiny_original_config)
    load_converted_state_dict(model, result)
    assert model.text_decoder.cls.predictions.decoder.weight is model.text_decoder.bert.embeddings.word_embeddings.weight
    del result.state_dict["tagging_head.label_embed.weight"]
    with pytest.raises(CheckpointConversionError, match="tagging_head.label_embed.weight"):
        load_converted_state_dict(Tag2TextForCaptioning(tiny_original_config), result)


# -- original config files -------------------------------------------------------------------------------------


def test_config_from_the_original_files(tiny_original_config):
    config = tiny_original_config
    vision = config.vision_config
    assert (vision.image_size, vision.embed_dim, vision.depths, vision.num_heads, vision.window_size) == (
        224, 16, [2, 2, 2, 2], [1, 2, 4, 8], 7)
    assert config.vision_hidden_size == 128
    text = config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.vocab_size) == (32, 2, 4, 593)
    assert (text.bos_token_id, text.enc_token_id, text.sep_token_id, text.pad_token_id) == (591, 592, 102, 0)
    assert (config.tagging_config.num_hidden_layers, config.tagging_config.num_attention_heads) == (2, 2)
    assert config.tag_threshold == 0.68
    assert config.tag_thresholds == {2701: 0.7, 2828: 0.7, 1167: 0.7}
    assert config.caption_excluded_tag_ids == sorted([127, 2961, 3351, 3265, 3338, 3355, 3359])
    assert len(config.tag_token_ids) == 3429 and config.prompt_token_ids == [146, 167, 149]


def test_released_defaults_need_no_files():
    config = config_from_original([f"t{i}" for i in range(3429)])
    reference = preset_config("tag2text-swin-b-384")
    assert config.vision_config.to_dict() | {"drop_path_rate": 0} == reference.vision_config.to_dict() | {
        "drop_path_rate": 0}
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                "encoder_hidden_size", "max_position_embeddings", "layer_norm_eps"):
        assert getattr(config.text_config, key) == getattr(reference.text_config, key), key
    assert expected_shapes(config) == expected_shapes(reference)


def test_config_errors_name_the_file_and_value(tmp_path, fixture_tokenizer):
    med = json.loads((FIXTURE / "med_config.json").read_text())
    q2l = json.loads((FIXTURE / "q2l_config.json").read_text())
    swin = json.loads((FIXTURE / "swin_config.json").read_text())
    names = read_tag_list(FIXTURE / "tag_list.txt")
    cases = [
        (dict(q2l_config=dict(q2l, hidden_size=64)), "q2l config: hidden_size=64"),
        (dict(q2l_config=dict(q2l, layer_norm_eps=1e-6)), "layer_norm_eps"),
        (dict(vision_config=dict(swin, vision_width=256)), "vision_width=256"),
        (dict(vision_config=dict(swin, vit="base")), "vit='base'"),
        (dict(med_config=dict(med, position_embedding_type="relative_key")), "relative_key"),
        (dict(med_config=dict(med, encoder_width=64)), "encoder_width=64"),
        (dict(med_config=dict(med, vocab_size=600), tokenizer=fixture_tokenizer), "593 tokens"),
        (dict(vision_config=tmp_path / "absent.json"), "absent.json"),
    ]
    for overrides, expected in cases:
        arguments = dict(CONFIG_FILES, **overrides)
        with pytest.raises(OriginalConfigError, match=None) as error:
            config_from_original(names, **arguments)
        assert expected in str(error.value), (overrides, str(error.value))
    with pytest.raises(OriginalConfigError, match="--delete-tag-index"):
        config_from_original(names[:100], **CONFIG_FILES, class_thresholds={})
    with pytest.raises(OriginalConfigError, match="--class-threshold"):
        config_from_original(names[:100], **CONFIG_FILES, delete_tag_index=[])
    short = config_from_original(names[:100], **CONFIG_FILES, class_thresholds={5: 0.9}, delete_tag_index=[])
    assert short.tag_thresholds == {5: 0.9} and short.caption_excluded_tag_ids == []
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(OriginalConfigError, match="bad.json"):
        config_from_original(names, **dict(CONFIG_FILES, med_config=tmp_path / "bad.json"))


def test_tag_list_length_must_match_the_checkpoint(tmp_path):
    short = tmp_path / "short_tags.txt"
    short.write_text("\n".join(read_tag_list(FIXTURE / "tag_list.txt")[:3428]))
    with pytest.raises(CheckpointConversionError, match="3428 tags but checkpoint .* has 3429 classes"):
        convert_checkpoint(tmp_path / "out", checkpoint=FIXTURE / "original_state_dict.safetensors", tag_list=short,
                           tokenizer=FIXTURE / "vocab.txt", **CONFIG_FILES)


# -- downloads (the tests run offline) -------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    """Offline whatever the environment says (huggingface_hub reads HF_HUB_OFFLINE at import time)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_missing_checkpoint_download_fails_clearly_offline(tmp_path, offline):
    with pytest.raises(CheckpointDownloadError) as error:
        convert_checkpoint(tmp_path / "out", tag_list=FIXTURE / "tag_list.txt", tokenizer=FIXTURE / "vocab.txt",
                           cache_dir=tmp_path / "cache", **CONFIG_FILES)
    assert RELEASED_CHECKPOINT_URL in str(error.value) and "--checkpoint" in str(error.value)
    with pytest.raises(CheckpointDownloadError, match="--tag-list"):
        download_released_tag_list()
    assert not (tmp_path / "out").exists()


def test_unloadable_tokenizer_is_named(tmp_path, offline):
    with pytest.raises(OriginalConfigError, match="--tokenizer") as error:
        convert_checkpoint(tmp_path / "out", checkpoint=FIXTURE / "original_state_dict.safetensors",
                           tag_list=FIXTURE / "tag_list.txt", tokenizer=tmp_path / "no-such-tokenizer", **CONFIG_FILES)
    assert "no-such-tokenizer" in str(error.value)


def test_cli_reports_errors_in_one_line(tmp_path, capsys, offline):
    arguments = ["convert", "--output-dir", str(tmp_path / "out"), "--tag-list", str(FIXTURE / "tag_list.txt"),
                 "--tokenizer", str(FIXTURE / "vocab.txt"), "--vision-config", str(FIXTURE / "swin_config.json"),
                 "--med-config", str(FIXTURE / "med_config.json"), "--q2l-config", str(FIXTURE / "q2l_config.json")]
    # A missing input is a usage error (2); a download that cannot happen is a failure (1).
    assert cli_main(arguments + ["--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert cli_main(arguments + ["--cache-dir", str(tmp_path / "cache")]) == 1
    assert RELEASED_CHECKPOINT_URL in capsys.readouterr().err
    assert cli_main(arguments + ["--class-threshold", "2701:0.7"]) == 2
    assert "2701:0.7" in capsys.readouterr().err


# -- the output directory --------------------------------------------------------------------------------------


def test_cli_writes_a_complete_directory_that_loads_everywhere(tmp_path, capsys):
    out = tmp_path / "converted"
    status = cli_main([
        "--log-level", "WARNING", "convert",
        "--checkpoint", str(FIXTURE / "original_state_dict.safetensors"),
        "--tag-list", str(FIXTURE / "tag_list.txt"),
        "--vision-config", str(FIXTURE / "swin_config.json"),
        "--med-config", str(FIXTURE / "med_config.json"),
        "--q2l-config", str(FIXTURE / "q2l_config.json"),
        "--tokenizer", str(FIXTURE / "vocab.txt"),
        "--threshold", "0.6", "--class-threshold", "2701=0.75", "107=0.5", "--delete-tag-index",
        "--output-dir", str(out),
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert "3429 tags" in printed and "alignment.logit_temperature" in printed
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "processor_config.json",
            "tokenizer.json", "tokenizer_config.json", "README.md", "configuration_tag2text.py",
            "modeling_tag2text.py", "modeling_tag2text_text.py", "pipeline_tag2text.py", "processing_tag2text.py",
            "image_processing_tag2text.py"} <= files

    config = json.loads((out / "config.json").read_text())
    assert config["tag_names"] == read_tag_list(FIXTURE / "tag_list.txt")
    assert config["tag_threshold"] == 0.6 and config["tag_thresholds"] == {"2701": 0.75, "107": 0.5}
    assert config["caption_excluded_tag_ids"] == []
    assert config["prompt_token_ids"] == [146, 167, 149] and len(config["tag_token_ids"]) == 3429
    assert config["custom_pipelines"]["image-to-text"]["impl"] == "pipeline_tag2text.Tag2TextCaptionPipeline"
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["num_beams"], generation["max_new_tokens"], generation["min_new_tokens"]) == (3, 26, 6)
    assert (generation["eos_token_id"], generation["pad_token_id"], generation["bos_token_id"]) == (102, 0, 591)
    card = (out / "README.md").read_text()
    for fact in ("pipeline_tag: image-to-text", "3429 tags", "0.6 for every", "2701 `person`: 0.75",
                 "original_state_dict.safetensors", hashlib.sha256(
                     (FIXTURE / "original_state_dict.safetensors").read_bytes()).hexdigest(),
                 "`vision_proj`", "huang2023tag2text", "No evaluation results", "trust_remote_code=True"):
        assert fact in card, fact

    processor = Tag2TextProcessor.from_pretrained(out)
    assert processor.image_processor.size == 224
    assert processor.tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [591, 592]
    model = Tag2TextForCaptioning.from_pretrained(out).eval()
    auto = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=True).eval()
    pixel_values = processor(images=tiny_factory.draw_image(0))["pixel_values"]
    with torch.no_grad():
        expected = model.generate(pixel_values, num_beams=1, max_new_tokens=5, min_new_tokens=5)
        assert torch.equal(auto.generate(pixel_values, num_beams=1, max_new_tokens=5, min_new_tokens=5), expected)
        tags = model.tag(pixel_values)[0].tags
    captioner = pipeline("image-to-text", model=str(out), trust_remote_code=True)
    result = captioner(tiny_factory.draw_image(0), num_beams=1, max_new_tokens=5, min_new_tokens=5)
    assert result == [{"generated_text": processor.decode_captions(expected)[0], "tags": tags}]


# -- the full-size layout --------------------------------------------------------------------------------------


def original_full_size_listing():
    """(key, shape) of the released checkpoint's state dict, in the original's order, written from the
    original architecture (Swin-B 384, BERT-base encoder and decoder, 2-layer tagging head, 3,429 tags)."""
    rows = []

    def add(key, *shape):
        rows.append((key, tuple(shape)))

    v = "visual_encoder."
    add(v + "patch_embed.proj.weight", 128, 3, 4, 4)
    add(v + "patch_embed.proj.bias", 128)
    add(v + "patch_embed.norm.weight", 128)
    add(v + "patch_embed.norm.bias", 128)
    resolution, window = 96, 12
    for stage, (depth, heads) in enumerate(zip([2, 2, 18, 2], [4, 8, 16, 32])):
        dim = 128 * 2 ** stage
        win = min(window, resolution)
        for block in range(depth):
            p = f"{v}layers.{stage}.blocks.{block}."
            if block % 2 == 1 and resolution > window:  # shifted blocks keep their mask as a buffer
                add(p + "attn_mask", (resolution // win) ** 2, win * win, win * win)
            add(p + "norm1.weight", dim)
            add(p + "norm1.bias", dim)
            add(p + "attn.relative_position_bias_table", (2 * win - 1) ** 2, heads)
            add(p + "attn.relative_position_index", win * win, win * win)
            add(p + "attn.qkv.weight", 3 * dim, dim)
            add(p + "attn.qkv.bias", 3 * dim)
            add(p + "attn.proj.weight", dim, dim)
            add(p + "attn.proj.bias", dim)
            add(p + "norm2.weight", dim)
            add(p + "norm2.bias", dim)
            add(p + "mlp.fc1.weight", 4 * dim, dim)
            add(p + "mlp.fc1.bias", 4 * dim)
            add(p + "mlp.fc2.weight", dim, 4 * dim)
            add(p + "mlp.fc2.bias", dim)
        if stage < 3:
            add(f"{v}layers.{stage}.downsample.reduction.weight", 2 * dim, 4 * dim)
            add(f"{v}layers.{stage}.downsample.norm.weight", 4 * dim)
            add(f"{v}layers.{stage}.downsample.norm.bias", 4 * dim)
            resolution //= 2
    add(v + "norm.weight", 1024)
    add(v + "norm.bias", 1024)

    def bert(prefix, cross_width, layers, self_attention=True):
        if self_attention:  # the tagging head has its embeddings and self-attention deleted
            add(prefix + "embeddings.position_ids", 1, 512)
            add(prefix + "embeddings.word_embeddings.weight", 30524, 768)
            add(prefix + "embeddings.position_embeddings.weight", 512, 768)
            add(prefix + "embeddings.LayerNorm.weight", 768)
            add(prefix + "embeddings.LayerNorm.bias", 768)
        blocks = (("attention", 768), ("crossattention", cross_width)) if self_attention else (
            ("crossattention", cross_width),)
        for i in range(layers):
            p = f"{prefix}encoder.layer.{i}."
            for name, width in blocks:
                for projection, in_width in (("query", 768), ("key", width), ("value", width)):
                    add(f"{p}{name}.self.{projection}.weight", 768, in_width)
                    add(f"{p}{name}.self.{projection}.bias", 768)
                add(f"{p}{name}.output.dense.weight", 768, 768)
                add(f"{p}{name}.output.dense.bias", 768)
                add(f"{p}{name}.output.LayerNorm.weight", 768)
                add(f"{p}{name}.output.LayerNorm.bias", 768)
            add(p + "intermediate.dense.weight", 3072, 768)
            add(p + "intermediate.dense.bias", 3072)
            add(p + "output.dense.weight", 768, 3072)
            add(p + "output.dense.bias", 768)
            add(p + "output.LayerNorm.weight", 768)
            add(p + "output.LayerNorm.bias", 768)

    bert("tag_encoder.", 1024, 12)
    bert("text_decoder.bert.", 768, 12)
    c = "text_decoder.cls.predictions."
    add(c + "bias", 30524)
    add(c + "transform.dense.weight", 768, 768)
    add(c + "transform.dense.bias", 768)
    add(c + "transform.LayerNorm.weight", 768)
    add(c + "transform.LayerNorm.bias", 768)
    add(c + "decoder.weight", 30524, 768)
    add(c + "decoder.bias", 30524)
    bert("tagging_head.", 1024, 2, self_attention=False)
    add("label_embed.weight", 3429, 768)
    add("fc.W", 1, 3429, 768)
    add("fc.b", 1, 3429)
    return rows


# SHA-256 of the released checkpoint's key/shape listing ("key<TAB>shape" lines, 1,038 of them), as dumped
# from the original model built at full size; the listing above must reproduce it exactly.
FULL_SIZE_LISTING_SHA256 = "4a51d9b7011cd4bc7f883a27544310717b71f794a49f263a254795ab1b5c90d2"


def test_full_size_listing_is_the_released_layout():
    rows = original_full_size_listing()
    text = "".join(f"{key}\t{shape}\n" for key, shape in rows)
    assert len(rows) == 1038
    assert hashlib.sha256(text.encode()).hexdigest() == FULL_SIZE_LISTING_SHA256


def test_full_size_random_state_dict_converts_with_a_strict_load():
    """Every released tensor lands in the default (released-size) config, nothing is left over or missing."""
    tied = {"text_decoder.cls.predictions.decoder.weight":
            "text_decoder.bert.embeddings.word_embeddings.weight",
            "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias"}
    original, markers = {}, {}
    for index, (key, shape) in enumerate(original_full_size_listing()):
        source = tied.get(key) or (key.replace("tagging_head.", "tag_encoder.") if key.startswith("tagging_head.")
                                   else None)
        if source is not None:
            original[key] = original[source]  # tied in the original: the same tensor under both names
            continue
        # torch.empty: untouched pages cost no memory; only each tensor's first element is written, as a marker.
        tensor = torch.empty(shape)
        tensor.view(-1)[0] = float(index)
        if key.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            for third, part in enumerate(tensor.chunk(3)):
                part.reshape(-1)[0] = index + third / 4
        original[key] = tensor
        markers[key] = float(index)

    config = preset_config("tag2text-swin-b-384")
    result = convert_state_dict(original, expected_shapes(config))
    assert result.new_keys == NEW_KEYS
    with torch.device("meta"):
        model = Tag2TextForCaptioning(config)
    load_converted_state_dict(model, result, assign=True)
    state = model.state_dict()
    loaded = {k for k, v in state.items() if v.device.type != "meta"}
    assert loaded == set(state) - set(NEW_KEYS) - set(result.computed_keys)

    def first(key):
        return float(state[key].reshape(-1)[0])

    assert first("vision_model.embeddings.patch_embeddings.projection.weight") == markers[
        "visual_encoder.patch_embed.proj.weight"]
    block = "vision_model.encoder.layers.2.blocks.17."
    names = swin_block_parameter_names()
    qkv = markers["visual_encoder.layers.2.blocks.17.attn.qkv.weight"]
    assert [first(block + names[n] + ".weight") for n in ("query", "key", "value")] == [qkv, qkv + 0.25, qkv + 0.5]
    assert first("vision_model.layernorm.bias") == markers["visual_encoder.norm.bias"]
    assert first("text_encoder.encoder.layer.11.crossattention.self.key.weight") == markers[
        "tag_encoder.encoder.layer.11.crossattention.self.key.weight"]
    assert first("text_decoder.bert.encoder.layer.3.attention.output.LayerNorm.bias") == markers[
        "text_decoder.bert.encoder.layer.3.attention.output.LayerNorm.bias"]
    assert first("tagging_head.classifier_weight") == markers["fc.W"]
    assert first("tagging_head.label_embed.weight") == markers["label_embed.weight"]
    assert model.text_decoder.cls.predictions.decoder.weight is model.text_decoder.bert.embeddings.word_embeddings.weight
