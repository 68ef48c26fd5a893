"""Rule-based scene graphs from spaCy dependency parses.

A caption becomes entities (noun chunks: a head noun with its compounds, plus modifiers) and
relations between entities (a verb or preposition linking a subject entity to an object
entity). The rules are those of the scene-graph parser of Wu et al. (2019) that Tag2Text used
(PyPI ``scenegraphparser``, module ``sng_parser``), reimplemented here on top of a batched
spaCy pipeline, with its known faults fixed. Each fix can be switched off through
:class:`ParserRules`; ``ParserRules.reference()`` switches them all off, which is how the
benchmark separates rule fidelity from the deliberate differences:

``skip_pronouns``
    Pronoun chunks ("he", "it", "something") are not entities. The reference meant to drop
    them but tests the spaCy 2 lemma ``-PRON-``, which spaCy 3 no longer produces.
``fix_lemmas``
    Verb lemmas where spaCy drops a final "e" are corrected ("riding" -> "ride", not "rid";
    see :func:`~.lexicon.fix_verb_lemma`), and a few noun lemmas ("cookies" -> "cookie").
``lowercase``
    Lemmas are lower-cased ("People" -> "people").
``full_compounds``
    The head keeps every noun of a compound chain in text order ("ice hockey team"); the
    reference keeps only direct compound children and reverses their order when there are two.
``predicate_adjectives``
    "The sky is blue": "blue" (acomp of the subject's verb) is a modifier of "sky".
``complex_preposition_fixes``
    For "PREP NOUN of" prepositions ("in front of"), the relation lemma keeps the final "of",
    and when the phrase hangs off a verb ("a man standing in front of a bus") the verb's
    subject becomes the relation subject instead of the relation being lost.
``copula_prepositions``
    "A cat is on the table": a preposition attached to a copula (``AUX``) links the copula's
    subject to its object, as for a full verb; the reference finds no relation there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from .lexicon import DEFAULT_LEXICON, NOUN_LEMMA_FIXES, Lexicon, fix_verb_lemma

_HAS_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class ParserRules:
    """Switches for the deliberate differences from the reference parser (all on by default)."""

    skip_pronouns: bool = True
    fix_lemmas: bool = True
    lowercase: bool = True
    full_compounds: bool = True
    predicate_adjectives: bool = True
    complex_preposition_fixes: bool = True
    copula_prepositions: bool = True
    lexicon: Lexicon = field(default=DEFAULT_LEXICON)

    @classmethod
    def reference(cls, lexicon: Lexicon = DEFAULT_LEXICON) -> "ParserRules":
        """The reference parser's behaviour: every fix off."""
        switches = {f.name: False for f in fields(cls) if f.type in ("bool", bool)}
        return cls(lexicon=lexicon, **switches)

    def fixes(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lexicon"}


@dataclass
class Modifier:
    dep: str
    span: str
    lemma_span: str
    i: int


@dataclass
class Entity:
    """A noun chunk: ``root`` is the head token index, ``head_tokens`` the head with its compounds."""

    span: str
    lemma_span: str
    head: str
    lemma_head: str
    span_bounds: tuple[int, int]
    root: int
    head_tokens: tuple[int, ...]
    modifiers: list[Modifier] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "span": self.span,
            "lemma_span": self.lemma_span,
            "head": self.head,
            "lemma_head": self.lemma_head,
            "span_bounds": list(self.span_bounds),
            "modifiers": [{"dep": m.dep, "span": m.span, "lemma_span": m.lemma_span} for m in self.modifiers],
        }


@dataclass
class Relation:
    """``subject`` and ``object`` index :attr:`SceneGraph.entities`."""

    subject: int
    object: int
    relation: str
    lemma_relation: str

    def to_dict(self) -> dict:
        return {"subject": self.subject, "object": self.object, "relation": self.relation, "lemma_relation": self.lemma_relation}


@dataclass
class SceneGraph:
    """Entities and relations of one caption; ``position_nouns`` are the token indices of the
    inner nouns of complex prepositions ("front" in "in front of"), which are not entities."""

    entities: list[Entity]
    relations: list[Relation]
    position_nouns: frozenset[int] = frozenset()

    def to_dict(self) -> dict:
        """The reference parser's output layout: ``{"entities": [...], "relations": [...]}``."""
        return {"entities": [e.to_dict() for e in self.entities], "relations": [r.to_dict() for r in self.relations]}


def known_verb_lemmas(nlp) -> frozenset[str]:
    """Verb lemmas in the rule lemmatizer's tables (empty when the pipeline has none)."""
    try:
        lookups = nlp.get_pipe("lemmatizer").lookups
        index = lookups.get_table("lemma_index").get("verb", [])
        exceptions = lookups.get_table("lemma_exc").get("verb", {})
    except (KeyError, ValueError, AttributeError):
        return frozenset()
    found = set(index)
    for lemmas in exceptions.values():
        found.update(lemmas)
    return frozenset(found)


class SceneGraphParser:
    """Turns spaCy ``Doc`` objects into :class:`SceneGraph` objects.

    Args:
        nlp: a loaded English spaCy pipeline with tagger, parser and lemmatizer (see
            :func:`~.spacy_model.load_spacy_model`). Used for its lemmatizer tables and by
            :meth:`parse`; :meth:`parse_doc` works on any parsed ``Doc``.
        rules: which deliberate fixes to apply; default all.
    """

    def __init__(self, nlp, rules: ParserRules | None = None):
        self.nlp = nlp
        self.rules = rules or ParserRules()
        self._known_verbs = known_verb_lemmas(nlp) if nlp is not None else frozenset()

    # -- public ---------------------------------------------------------------------------
    def parse(self, text: str) -> SceneGraph:
        """Parse one sentence (convenience; batch work should go through ``nlp.pipe``)."""
        return self.parse_doc(self.nlp(text))

    def lemma(self, token) -> str:
        """The lemma the rules use for ``token``, with the enabled fixes applied."""
        lemma = token.lemma_
        if self.rules.fix_lemmas:
            pos = token.pos_
            if pos == "VERB" or pos == "AUX":
                lemma = fix_verb_lemma(token.text, lemma, self._known_verbs)
            elif pos == "NOUN" or pos == "PROPN":
                lemma = NOUN_LEMMA_FIXES.get(lemma.lower(), lemma)
        return lemma.lower() if self.rules.lowercase else lemma

    def span_lemma(self, doc, start: int, end: int) -> str:
        return "".join(self.lemma(t) + t.whitespace_ for t in doc[start:end]).strip()

    def parse_doc(self, doc) -> SceneGraph:
        chunks = list(doc.noun_chunks)
        subjects = self._verb_subjects(doc)

        # Relations are found for every chunk; the position nouns of complex prepositions are
        # found on the way and only then can the surviving entities be fixed.
        position_nouns: set[int] = set()
        raw_relations = []
        for chunk in chunks:
            found = self._relation_to(chunk.root, doc, subjects, position_nouns)
            if found is not None:
                raw_relations.append(found)

        kept = [c for c in chunks if c.root.i not in position_nouns and not self._is_dropped(c)]
        entities = [self._entity(c, doc) for c in kept]
        entity_of_token = {}
        for index, chunk in enumerate(kept):
            for i in range(chunk.start, chunk.end):
                entity_of_token[i] = index

        relations = []
        for subject, obj, text, lemma in raw_relations:
            # "a man and a woman riding bikes": each conjunct takes part in the relation.
            for s in _with_conjuncts(doc[subject]):
                for o in _with_conjuncts(doc[obj]):
                    s_entity = entity_of_token.get(s.i)
                    o_entity = entity_of_token.get(o.i)
                    if s_entity is not None and o_entity is not None:
                        relations.append(Relation(s_entity, o_entity, text, lemma))
        return SceneGraph(entities, relations, frozenset(position_nouns))

    # -- entities -------------------------------------------------------------------------
    def _is_dropped(self, chunk) -> bool:
        if self.rules.skip_pronouns:
            return chunk.root.pos_ == "PRON"
        return chunk.root.lemma_ == "-PRON-"

    def _entity(self, chunk, doc) -> Entity:
        root = chunk.root
        modifiers = []
        direct_compounds = []
        for child in root.children:
            dep = child.dep_
            if dep == "det" or dep == "nummod":
                modifiers.append(Modifier(dep, child.text, self.lemma(child), child.i))
            elif dep == "amod":
                for part in _with_conjuncts(child):
                    modifiers.append(Modifier(dep, part.text, self.lemma(part), part.i))
            elif dep == "compound":
                direct_compounds.append(child)
        if self.rules.predicate_adjectives and root.dep_ == "nsubj":
            for sibling in root.head.children:
                if sibling.dep_ == "acomp":
                    for part in _with_conjuncts(sibling):
                        modifiers.append(Modifier("acomp", part.text, self.lemma(part), part.i))

        if self.rules.full_compounds:
            head_tokens = sorted(_compound_chain(root), key=lambda t: t.i)
            head = " ".join(t.text for t in head_tokens)
            lemma_head = " ".join(self.lemma(t) for t in head_tokens)
        else:
            # The reference prepends each direct compound child in turn.
            head_tokens = [root]
            head, lemma_head = root.text, self.lemma(root)
            for child in direct_compounds:
                head_tokens.insert(0, child)
                head, lemma_head = f"{child.text} {head}", f"{self.lemma(child)} {lemma_head}"
        return Entity(
            span=chunk.text,
            lemma_span=self.span_lemma(doc, chunk.start, chunk.end),
            head=head,
            lemma_head=lemma_head,
            span_bounds=(chunk.start, chunk.end),
            root=root.i,
            head_tokens=tuple(t.i for t in head_tokens),
            modifiers=modifiers,
        )

    # -- relations ------------------------------------------------------------------------
    @staticmethod
    def _verb_subjects(doc) -> dict[int, int]:
        """Map verb token index -> subject token index."""
        subjects = {}
        for token in doc:
            dep = token.dep_
            if dep == "nsubj":  # a [woman] is [playing] the piano
                subjects[token.head.i] = token.i
            elif dep == "acl":  # a [woman] [playing] the piano
                subjects[token.i] = token.head.i
            elif dep == "pobj" and token.head.dep_ == "agent" and token.head.head.pos_ == "VERB":
                subjects[token.head.head.i] = token.i  # the piano is [played] by a [woman]
        return subjects

    def _relation_to(self, root, doc, subjects, position_nouns):
        """The relation whose object is the chunk headed by ``root``: (subj, obj, text, lemma) or None."""
        dep = root.dep_
        head = root.head
        if dep == "dobj" or dep == "attr":
            if head.i in subjects:
                return subjects[head.i], root.i, head.text, self.lemma(head)
            return None
        if dep == "nsubjpass":
            if head.i in subjects:
                return subjects[head.i], root.i, head.text, self.lemma(head)
            return None
        if dep != "pobj":
            return None

        prep, governor = head, head.head
        if prep.dep_ == "agent":
            return None
        if (
            governor.pos_ == "VERB"
            and governor.i + 1 == prep.i
            and governor.i in subjects
            and f"{self.lemma(governor)} {self.lemma(prep)}" in self.rules.lexicon.phrasal_verbs
        ):
            return (
                subjects[governor.i],
                root.i,
                f"{governor.text} {prep.text}",
                f"{self.lemma(governor)} {self.lemma(prep)}",
            )
        if (governor.pos_ == "VERB" or governor.dep_ == "acl") and governor.i in subjects:
            return subjects[governor.i], root.i, prep.text, self.lemma(prep)
        if self.rules.copula_prepositions and governor.pos_ == "AUX" and governor.i in subjects:
            return subjects[governor.i], root.i, prep.text, self.lemma(prep)
        if governor.dep_ == "pobj":
            first = governor.head
            phrase = doc[first.i : prep.i + 1]
            if first.i < prep.i and phrase.text.lower() in self.rules.lexicon.complex_prepositions:
                position_nouns.add(governor.i)
                anchor = first.head
                subject = anchor.i
                if self.rules.complex_preposition_fixes:
                    lemma = self.span_lemma(doc, first.i, prep.i + 1)
                    if anchor.i in subjects and anchor.pos_ in ("VERB", "AUX"):
                        subject = subjects[anchor.i]
                else:
                    lemma = self.span_lemma(doc, first.i, prep.i)
                return subject, root.i, phrase.text, lemma
        if governor.pos_ == "NOUN":  # a [piano] in the [room]
            return governor.i, root.i, prep.text, self.lemma(prep)
        if governor.dep_ in ("amod", "advmod"):
            target = governor.head
            text = f"{governor.text} {prep.text}"
            lemma = f"{self.lemma(governor)} {self.lemma(prep)}"
            if target.pos_ == "NOUN":  # a [piano] next to a [woman]
                return target.i, root.i, text, lemma
            if target.pos_ == "VERB" and target.i in subjects:  # a [woman] standing next to a [piano]
                return subjects[target.i], root.i, text, lemma
        return None


def _with_conjuncts(token):
    yield token
    for child in token.children:
        if child.dep_ == "conj":
            yield child


def _compound_chain(token):
    found = [token]
    for child in token.children:
        if child.dep_ == "compound":
            found.extend(_compound_chain(child))
    return found


def has_letter(text: str) -> bool:
    return _HAS_LETTER.search(text) is not None
