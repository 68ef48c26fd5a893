"""Word lists and lemma corrections used by the caption parser and the tag extractor.

Everything here is plain English grammar written for this project (it is not taken from
another parser's data files). The lists are deliberately small and caption-oriented; a
:class:`Lexicon` can be built with other lists, which is how the benchmark runs our rules
with the reference parser's lists to measure rule agreement separately from list choices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def _pairs(table: dict[str, str]) -> frozenset[str]:
    return frozenset(f"{verb} {prep}" for verb, preps in table.items() for prep in preps.split())


# Verb + preposition combinations that caption writers use as one action ("a cat sitting on a
# couch", "a dog playing with a frisbee"). When the preposition directly follows the verb, the
# relation is named by both words and the action tag keeps both ("sit on"), as in the original
# Tag2Text tag list, which has "sit on", "ride on", "play with", "look in" next to the bare verbs.
_PHRASAL_VERB_TABLE = {
    "sit": "on in at by with around atop beside inside",
    "stand": "on in at by around beside atop",
    "lie": "on in",
    "lay": "on in",
    "lean": "on against",
    "rest": "on",
    "hang": "on from",
    "perch": "on atop",
    "ride": "on in",
    "walk": "on in along across through down",
    "run": "on in through with across down along",
    "play": "with on in",
    "look": "at in out into through over for",
    "stare": "at",
    "gaze": "at",
    "point": "at",
    "jump": "in over off into",
    "fall": "in off",
    "climb": "on up",
    "sleep": "on in",
    "swim": "in",
    "float": "in on",
    "fly": "over",
    "live": "in",
    "work": "on at",
    "wait": "for at",
    "grow": "on in",
    "lead": "to",
    "go": "for",
    "head": "for",
    "reach": "for",
    "search": "for",
    "care": "for",
    "pose": "for with",
    "talk": "on to",
    "graze": "on in",
    "feed": "on",
    "drive": "down on",
    "skate": "on down",
    "ski": "down",
    "surf": "on",
    "cover": "in with",
    "fill": "with",
    "top": "with",
    "decorate": "with",
    "dress": "in",
    "line": "with",
    "get": "on off in out into",
    "take": "off",
    "put": "on",
    "pick": "up",
    "step": "on",
    "eat": "from",
    "drink": "from",
}
PHRASAL_VERBS: frozenset[str] = _pairs(_PHRASAL_VERB_TABLE)

# Multi-word prepositions of the form PREP NOUN (PREP NOUN) OF. Their inner noun ("front",
# "top", "middle") names a position, not an object, so it is not an entity and the whole
# phrase names the relation ("a dog in front of a door").
COMPLEX_PREPOSITIONS: frozenset[str] = frozenset(
    {
        "in front of",
        "in back of",
        "on top of",
        "at the top of",
        "at the bottom of",
        "in the middle of",
        "in the center of",
        "in the centre of",
        "on the side of",
        "on side of",
        "by the side of",
        "at the side of",
        "on the edge of",
        "at the edge of",
        "at the end of",
        "on the back of",
        "in the back of",
        "at the back of",
        "on the front of",
        "in the front of",
        "at the front of",
        "on either side of",
        "on both sides of",
        "on the other side of",
        "in the corner of",
        "in addition to",
        "in spite of",
        "on account of",
        "with regard to",
        "in regard to",
    }
)

# Quantities are not things in the picture: "two", "several", "a dozen".
QUANTITY_WORDS: frozenset[str] = frozenset(
    """
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty
    ninety hundred thousand million billion dozen dozens half single double triple
    several many few fewer much more most multiple numerous various plenty lots lot
    some any all both each every either neither no none enough another
    """.split()
)

# Nouns that only count or group what follows them ("a group of people", "a bunch of
# bananas"): with an "of" phrase they are a quantity, not an object.
QUANTITY_NOUNS: frozenset[str] = frozenset(
    """
    group bunch lot lots couple pair number variety assortment array collection set
    handful dozen dozens bundle batch series selection kind type sort amount plenty bit
    """.split()
)

# Adjectival modifiers that refer rather than describe.
NON_DESCRIPTIVE_ADJECTIVES: frozenset[str] = frozenset(
    """
    other same such own certain different similar next last first second third fourth
    fifth main only very whole entire particular various
    """.split()
)

# Verbs that state being or having rather than an action ("there are two dogs", "a kitchen
# that has a stove"); spaCy tags them VERB in some constructions.
NON_ACTION_VERBS: frozenset[str] = frozenset({"be", "have"})

# Colour words: as noun compounds ("an orange cat", "a gray tabby") they are still attributes.
COLOUR_WORDS: frozenset[str] = frozenset(
    """
    black white red green blue yellow orange purple pink brown gray grey silver gold golden
    beige tan maroon navy teal turquoise violet cream ivory
    """.split()
)

# Noun lemmas that spaCy's English rule lemmatizer gets wrong for caption words.
NOUN_LEMMA_FIXES: dict[str, str] = {
    "cooky": "cookie",
    "graffito": "graffiti",
    "people": "people",
}

# Verb forms whose stem ends in a consonant cluster, so the spelling rule below cannot tell
# "bathe" from "bath".
VERB_LEMMA_EXCEPTIONS: dict[str, str] = {
    "bathing": "bathe",
    "bathes": "bathe",
    "bathed": "bathe",
    "clothing": "clothe",
    "clothed": "clothe",
    "breathing": "breathe",
    "breathes": "breathe",
    "teething": "teethe",
    "soothing": "soothe",
}

_VOWELS = "aeiou"
_CVC_END = re.compile(r"[^aeiou][aeiou][^aeiouwxy]$")


def _syllable_groups(word: str) -> int:
    return len(re.findall(r"[aeiouy]+", word))


def fix_verb_lemma(form: str, lemma: str, known_verbs: frozenset[str] | set[str]) -> str:
    """Correct the lemma of an inflected verb where the rule lemmatizer dropped a final "e".

    spaCy's English lemmatizer tries its suffix rules in order and keeps the first result
    that is a known verb, so "riding" becomes "rid" and "staring" becomes "star". English
    spelling decides between the two: a one-syllable verb ending consonant-vowel-consonant
    doubles that consonant before -ing/-ed ("rid" -> "ridding", "star" -> "starring"), so
    an undoubled form such as "riding" can only come from the verb with an "e" ("ride").
    Likewise "rides" can only be "ride" + "s" ("rid" makes "rids").

    Args:
        form: the token text, any case.
        lemma: the lemma spaCy produced.
        known_verbs: verb lemmas the lemmatizer knows; the corrected lemma must be one.

    Returns:
        The corrected lemma, or ``lemma`` unchanged.
    """
    lower = form.lower()
    if lower in VERB_LEMMA_EXCEPTIONS:
        return VERB_LEMMA_EXCEPTIONS[lower]
    stem = lemma.lower()
    with_e = stem + "e"
    if stem.endswith("e") or with_e not in known_verbs:
        return lemma
    if lower in (stem + "ing", stem + "ed"):
        if _syllable_groups(stem) == 1 and _CVC_END.search(stem):
            return with_e
        return lemma
    if lower == stem + "es" and not re.search(r"(s|sh|ch|x|z|o)$", stem):
        return with_e
    return lemma


@dataclass(frozen=True)
class Lexicon:
    """The word lists the parsing rules consult.

    Attributes:
        phrasal_verbs: "verb preposition" lemma pairs that form one relation/action.
        complex_prepositions: multi-word prepositions ("in front of"), lower-case text.
    """

    phrasal_verbs: frozenset[str] = field(default=PHRASAL_VERBS)
    complex_prepositions: frozenset[str] = field(default=COMPLEX_PREPOSITIONS)


DEFAULT_LEXICON = Lexicon()
