"""Where tokenizers and models come from: tokenizers that cannot be loaded are never used, local paths never go
to the Hub, missing local paths fail at once."""

import os
import subprocess
import sys
import time

import pytest
from transformers import BertTokenizer

import tiny_factory
from tag2text import TokenizerLoadError, build_tokenizer
from tag2text.hub.model_source import ModelSourceError, load_processor, resolve_model_source
from tag2text.processing.source_check import looks_like_hub_id

OFFLINE = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def test_offline_bert_base_uncased_is_refused_with_the_option_to_use():
    # The premise, as transformers 5 behaves offline: no error, a vocabulary of the 5 special tokens.
    degraded = BertTokenizer.from_pretrained("bert-base-uncased")
    assert len(degraded) == 5 and degraded.tokenize("a red dog") == ["[UNK]"] * 3
    with pytest.raises(TokenizerLoadError) as error:
        build_tokenizer("bert-base-uncased")
    message = str(error.value)
    assert message.startswith("--tokenizer: could not load 'bert-base-uncased'")
    assert "5-token vocabulary" in message and "vocab.txt" in message and "\n" not in message


def test_option_name_is_the_callers():
    with pytest.raises(TokenizerLoadError, match="^--init-tokenizer: could not load 'bert-base-uncased'"):
        build_tokenizer("bert-base-uncased", option="--init-tokenizer")


def _vocab(tmp_path, words):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tiny_factory.SPECIAL + list(words)) + "\n", encoding="utf-8")
    return path


def test_vocabulary_of_special_tokens_only_is_refused(tmp_path):
    path = _vocab(tmp_path, [])
    with pytest.raises(TokenizerLoadError, match="5-token vocabulary of special tokens only"):
        build_tokenizer(path)
    with pytest.raises(TokenizerLoadError, match="5-token vocabulary"):
        build_tokenizer(tmp_path)  # the directory holding it


def test_vocabulary_that_spells_probe_words_as_unk_is_refused(tmp_path):
    path = _vocab(tmp_path, ["circle", "square", "red"])
    with pytest.raises(TokenizerLoadError, match=r"spells 'a' as \[UNK\] only"):
        build_tokenizer(path)
    with pytest.raises(TokenizerLoadError, match=r"'dog'"):
        build_tokenizer(_vocab(tmp_path, ["a", "red", "circle"]), probe_words=("a", "dog"))


def test_caption_vocabulary_and_saved_tokenizer_pass(tmp_path):
    # A vocabulary written for one's own captions needs only "a" (no dog in a set of circles).
    tokenizer = build_tokenizer(_vocab(tmp_path, ["a", "red", "circle", "picture", "of"]))
    assert tokenizer.tokenize("a red circle") == ["a", "red", "circle"]
    assert tokenizer.convert_tokens_to_ids("[DEC]") == 10 and tokenizer.convert_tokens_to_ids("[ENC]") == 11
    # Saved tokenizer files (tokenizer.json, tokenizer_config.json) are checked against "a", "dog", "red".
    full = tiny_factory.make_tokenizer(tmp_path)
    full.save_pretrained(tmp_path / "saved")
    again = build_tokenizer(tmp_path / "saved")
    assert again.tokenize("a red dog") == ["a", "red", "dog"]
    small = build_tokenizer(_vocab(tmp_path, ["a", "red"]))
    small.save_pretrained(tmp_path / "saved_small")
    with pytest.raises(TokenizerLoadError, match="'dog'"):
        build_tokenizer(tmp_path / "saved_small")


def test_missing_local_tokenizer_path_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for source in ("./bert", "vocab/vocab.txt/x", "~/nope-tag2text-vocab", "../bert/vocab.txt", "a/b/c"):
        started = time.perf_counter()
        with pytest.raises(TokenizerLoadError, match="no tokenizer file or directory at"):
            build_tokenizer(source)
        assert time.perf_counter() - started < 5  # no Hub retries (they take tens of seconds)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerLoadError, match="neither vocab.txt nor tokenizer files"):
        build_tokenizer("empty")


@pytest.mark.parametrize("source, repo_id", [
    ("owner/name", True), ("bert-base-uncased", False), ("./owner/name", False), ("/abs/model", False),
    ("~/model", False), ("a/b/c", False), ("owner\\name", False), ("owner/na me", False), ("owner/", False),
    ("xinyu1205/recognize_anything_model", True), ("-bad/name", False), ("owner/name.", False),
])
def test_repo_id_shape(source, repo_id):
    assert looks_like_hub_id(source) is repo_id
    assert looks_like_hub_id("bert-base-uncased", allow_bare_name=True)


def test_model_source_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSourceError, match="^--model nosuch_dir: no model directory at nosuch_dir$"):
        resolve_model_source("nosuch_dir")
    with pytest.raises(ModelSourceError, match="no model directory at"):
        resolve_model_source("runs/t2t/final")
    (tmp_path / "owner" / "name").mkdir(parents=True)
    with pytest.raises(ModelSourceError, match="has no config.json"):
        resolve_model_source("owner/name")  # exists here: a local directory, never a repo id
    (tmp_path / "owner" / "name" / "config.json").write_text("{}")
    assert resolve_model_source("owner/name") == "owner/name"
    assert resolve_model_source("someone/tag2text") == "someone/tag2text"  # not here: a repo id
    (tmp_path / "file.bin").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="is a file"):
        resolve_model_source("file.bin")


def test_local_directory_named_like_a_repo_id_loads_from_disk(tmp_path, model, processor):
    """``owner/name`` that exists locally is loaded from disk; offline, a Hub lookup of it would fail."""
    model.save_pretrained(tmp_path / "owner" / "name")
    processor.save_pretrained(tmp_path / "owner" / "name")
    tiny_factory.draw_image(0).save(tmp_path / "x.png")
    result = subprocess.run([sys.executable, "-m", "tag2text.hub.cli", "caption", "--model", "owner/name", "x.png",
                             "--num-beams", "1"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env=OFFLINE)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"caption"' in result.stdout


def test_model_trained_with_an_unloadable_tokenizer_is_refused(tmp_path, model):
    """A processor saved with the offline 5-token tokenizer: the prompt is [UNK], the captions would be empty."""
    degraded = BertTokenizer.from_pretrained("bert-base-uncased")
    tiny_factory.make_processor(degraded).save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(TokenizerLoadError, match=r"spells the prompt words 'a', 'picture', 'of' as \[UNK\]"):
        load_processor(str(tmp_path / "m"))
