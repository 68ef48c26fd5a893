"""From a scene graph to typed tag mentions.

Heads of entities become object/scene tags (lemmas, so plurals become singular), adjective and
colour modifiers become attribute tags, and verbs become action tags (lemma, plus a particle or
a phrasal preposition: "pick up", "sit on"). Pronouns, determiners and quantity words never
become tags.

Each mention carries candidate strings, longest first, so that a tag vocabulary can pick the
most specific tag it has: "big fire hydrant" -> "fire hydrant" -> "hydrant"; "hot dog" (an
adjective + noun compound) is only a tag when the vocabulary has it, in which case "hot" is
not also an attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

from .lexicon import COLOUR_WORDS, NON_ACTION_VERBS, NON_DESCRIPTIVE_ADJECTIVES, QUANTITY_NOUNS, QUANTITY_WORDS
from .scene_graph import SceneGraph, SceneGraphParser, has_letter
from .tag_types import ACTION, ATTRIBUTE, OBJECT

# Adjectives and participles describe; an "amod" noun ("ski" in "a ski lift") is a misparsed
# compound, so only colour words are accepted from other parts of speech.
_ATTRIBUTE_POS = frozenset({"ADJ", "VERB"})


@dataclass(frozen=True)
class TagCandidate:
    """A string to look up in a vocabulary; ``covers`` lists modifier tokens it absorbs."""

    text: str
    covers: tuple[int, ...] = ()


@dataclass(frozen=True)
class TagMention:
    """One tag found in a caption.

    Attributes:
        type: ``"object"``, ``"attribute"`` or ``"action"``.
        text: the tag without reference to any vocabulary.
        position: token index in the caption, for ordering.
        candidates: strings to try against a vocabulary, most specific first.
    """

    type: str
    text: str
    position: int
    candidates: tuple[TagCandidate, ...]


def _unique(strings):
    seen = []
    for s in strings:
        if s not in seen:
            seen.append(s)
    return seen


def _has_of_phrase(token) -> bool:
    return any(c.dep_ == "prep" and c.lower_ == "of" for c in token.children)


def _is_quantity(head_tokens, lemma: str) -> bool:
    """Numbers and counting nouns ("two", "a group of", "a bunch of") are not objects."""
    if len(head_tokens) != 1:
        return False  # "parking lot" is a thing even though "lot" alone counts
    root = head_tokens[0]
    if root.like_num or lemma in QUANTITY_WORDS:
        return True
    return lemma in QUANTITY_NOUNS and _has_of_phrase(root)


def _object_mentions(doc, entity, parser: SceneGraphParser, lemma_of):
    mentions = []
    root = doc[entity.root]
    head = [doc[i] for i in entity.head_tokens if has_letter(doc[i].text)]
    if not head or root not in head:
        return mentions
    if _is_quantity(head, lemma_of(root)):
        return mentions

    # Colour words parsed as nouns in a compound ("an orange cat") describe the head.
    colours = []
    while len(head) > 1 and head[0].lower_ in COLOUR_WORDS:
        colours.append(head.pop(0))
    for colour in colours:
        mentions.append(TagMention(ATTRIBUTE, colour.lower_, colour.i, (TagCandidate(colour.lower_),)))

    # Adjectives directly before the head may belong to a lexicalised name ("hot dog").
    left = list(colours)
    j = (left[0].i if left else head[0].i) - 1
    while j >= entity.span_bounds[0]:
        token = doc[j]
        if token.tag_ == "HYPH":  # "hot-dog"
            j -= 1
            continue
        if token.dep_ != "amod" or token.head.i != root.i:
            break
        left.insert(0, token)
        j -= 1

    head_lemmas = [lemma_of(t) for t in head]
    candidates = []
    for k in range(len(left), 0, -1):
        modifiers = left[-k:]
        text = " ".join([m.lower_ for m in modifiers] + head_lemmas)
        candidates.append(TagCandidate(text, tuple(m.i for m in modifiers)))
    for k in range(len(head)):
        candidates.append(TagCandidate(" ".join(head_lemmas[k:])))
    mentions.append(TagMention(OBJECT, " ".join(head_lemmas), root.i, tuple(candidates)))
    return mentions


def _attribute_mentions(doc, entity, lemma_of):
    mentions = []
    for modifier in entity.modifiers:
        if modifier.dep not in ("amod", "acomp"):
            continue
        token = doc[modifier.i]
        lower = token.lower_
        if (
            not has_letter(lower)
            or token.like_num
            or (token.pos_ not in _ATTRIBUTE_POS and lower not in COLOUR_WORDS)
            or lower in QUANTITY_WORDS
            or lower in NON_DESCRIPTIVE_ADJECTIVES
        ):
            continue
        lemma = lemma_of(token)
        # Participles stay as written ("striped", "parked"), as in the official tag list;
        # comparatives and superlatives are reduced ("older" -> "old").
        text = lemma if token.tag_ in ("JJR", "JJS") else lower
        candidates = tuple(TagCandidate(s) for s in _unique([text, lemma]))
        mentions.append(TagMention(ATTRIBUTE, text, token.i, candidates))
    return mentions


def _action_mentions(doc, graph: SceneGraph, parser: SceneGraphParser, lemma_of):
    mentions = []
    phrasal = parser.rules.lexicon.phrasal_verbs
    for token in doc:
        # Participles inside noun phrases ("parked cars", "dining table") are attributes or
        # part of a name, not actions.
        if token.pos_ != "VERB" or token.dep_ in ("amod", "compound"):
            continue
        lemma = lemma_of(token)
        if not has_letter(lemma) or lemma in NON_ACTION_VERBS:
            continue
        particle = next((c for c in token.children if c.dep_ == "prt"), None)
        prep = next((c for c in token.children if c.dep_ == "prep" and c.i == token.i + 1), None)
        if prep is not None and any(c.i in graph.position_nouns for c in prep.children):
            prep = None  # "standing in front of": the preposition belongs to "in front of"
        candidates = []
        text = lemma
        if particle is not None:
            text = f"{lemma} {particle.lower_}"
            candidates.append(text)
        if prep is not None:
            with_prep = f"{lemma} {lemma_of(prep)}"
            candidates.append(with_prep)
            if particle is None and with_prep in phrasal:
                text = with_prep
        candidates.append(lemma)
        mentions.append(TagMention(ACTION, text, token.i, tuple(TagCandidate(s) for s in _unique(candidates))))
    return mentions


def extract_tag_mentions(doc, graph: SceneGraph, parser: SceneGraphParser) -> list[TagMention]:
    """All tag mentions of a parsed caption, in caption order.

    Args:
        doc: the spaCy ``Doc`` the graph was built from.
        graph: ``parser.parse_doc(doc)``.
        parser: supplies the lemma rules and the lexicon.
    """

    def lemma_of(token):
        return parser.lemma(token).lower()

    mentions = []
    for entity in graph.entities:
        mentions.extend(_object_mentions(doc, entity, parser, lemma_of))
        mentions.extend(_attribute_mentions(doc, entity, lemma_of))
    mentions.extend(_action_mentions(doc, graph, parser, lemma_of))
    mentions.sort(key=lambda m: m.position)
    return mentions
