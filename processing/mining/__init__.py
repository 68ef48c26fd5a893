"""Mining tags from captions: the text semantic parser and the tag category system.

Tag2Text needs no manual labels: its tags are parsed from image captions. This package
parses captions with spaCy into scene graphs (entities and relations), turns them into
object/scene, attribute and action tags, matches them to a tag list (by index, since the
official list repeats strings across types), and builds tag lists from caption corpora.

Public API::

    from tag2text.processing.mining import TagMiner, build_tag_list, tag_ids_to_multi_hot

    miner = TagMiner(tag_list="tag_list.txt")          # spaCy model: en_core_web_sm by default
    rows = miner.mine(captions)                        # [{"caption", "objects", "attributes",
                                                       #   "actions", "tags", "tag_ids", ...}]
    labels = miner.multi_hot([r["tag_ids"] for r in rows], return_tensors="pt")

    build_tag_list(dataset, "tag_list.txt", top_k=5000, min_count=10)

Differences from the reference parser (scenegraphparser 0.1.0, which Tag2Text used), all
deliberate. In the scene graph (each can be switched off, see ``ParserRules``):

* pronoun chunks ("he", "it", "someone") are not entities (the reference's ``-PRON-`` test
  no longer fires under spaCy 3);
* verb lemmas that spaCy truncates are corrected ("riding" -> "ride", not "rid"), plus a few
  noun lemmas ("cookies" -> "cookie");
* lemmas are lower-cased;
* a head keeps its whole compound chain in text order ("ice hockey team");
* predicate adjectives are modifiers ("the sky is blue");
* complex prepositions ("in front of") keep "of" in the relation lemma, and when attached to
  a verb take the verb's subject as the relation subject;
* a preposition attached to a copula makes a relation ("a cat is on the table");
* our own, caption-oriented phrasal-verb and complex-preposition lists replace the
  reference's (an idiom dictionary of 1,771 verbs and 10 prepositions).

In the tags (the reference has no tag stage): quantity words and counting nouns ("two",
"several", "a group of") are not tags; colour nouns in compounds are attributes; participle
modifiers stay as written ("striped"); every verb except "be"/"have" is an action, not only
relation verbs, with its particle ("pick up") or a phrasal preposition ("sit on"); with a tag
list, the most specific candidate it holds wins ("fire hydrant", else "hydrant"; "hot dog"
absorbs "hot").
"""

from .caption_cleaning import DEFAULT_MAX_CHARS, DEFAULT_MAX_WORDS, REPAIRS, SKIP_REASONS, UnreadableCaption, clean_caption
from .caption_sources import CaptionRecord, CaptionSource, dataset_caption_records, open_caption_source
from .lexicon import Lexicon
from .mining_summary import MiningSummary
from .multi_hot import tag_ids_to_multi_hot
from .scene_graph import ParserRules, SceneGraph, SceneGraphParser
from .spacy_model import (
    DEFAULT_SPACY_MODEL,
    FALLBACK_SPACY_MODEL,
    SpacyModelNotFoundError,
    load_spacy_model,
    resolve_spacy_model_name,
)
from .synonyms import SynonymMap
from .tag_list_builder import TagEntry, TagListResult, build_tag_list, count_tags, read_stop_list, select_tags, write_tag_list
from .tag_miner import DEFAULT_BATCH_SIZE, TagMiner, choose_num_processes
from .tag_types import ACTION, ATTRIBUTE, OBJECT, TAG_TYPES
from .tag_vocabulary import TagVocabulary, read_tag_list, sidecar_path

__all__ = [
    "ACTION",
    "ATTRIBUTE",
    "CaptionRecord",
    "CaptionSource",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_WORDS",
    "DEFAULT_SPACY_MODEL",
    "FALLBACK_SPACY_MODEL",
    "Lexicon",
    "MiningSummary",
    "OBJECT",
    "ParserRules",
    "REPAIRS",
    "SKIP_REASONS",
    "SceneGraph",
    "SceneGraphParser",
    "SpacyModelNotFoundError",
    "SynonymMap",
    "TAG_TYPES",
    "TagEntry",
    "TagListResult",
    "TagMiner",
    "TagVocabulary",
    "UnreadableCaption",
    "build_tag_list",
    "choose_num_processes",
    "clean_caption",
    "count_tags",
    "dataset_caption_records",
    "load_spacy_model",
    "open_caption_source",
    "read_stop_list",
    "read_tag_list",
    "resolve_spacy_model_name",
    "select_tags",
    "sidecar_path",
    "tag_ids_to_multi_hot",
    "write_tag_list",
]
