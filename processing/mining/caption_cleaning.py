"""Checking and repairing raw captions before they reach the parser.

Web captions come with HTML, URLs, empty strings, other languages and the occasional page of
text. None of that may stop a batch: each caption is either repaired (and the repair noted) or
skipped with a reason, and the caller counts both.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

DEFAULT_MAX_WORDS = 100
DEFAULT_MAX_CHARS = 1000

# Why a caption was not parsed.
SKIP_MISSING = "missing"  # None
SKIP_NOT_TEXT = "not_text"  # a number, a list, bytes...
SKIP_EMPTY = "empty"  # empty or whitespace only (also after removing markup)
SKIP_NO_LETTERS = "no_letters"  # only digits, punctuation or symbols
SKIP_NON_ENGLISH = "non_english"  # another script, or recognisably another Latin-script language
SKIP_UNREADABLE = "unreadable"  # the input record itself could not be read (bad JSON line...)

SKIP_REASONS = {
    SKIP_MISSING: "caption is missing (None)",
    SKIP_NOT_TEXT: "caption is not a string",
    SKIP_EMPTY: "caption is empty or whitespace",
    SKIP_NO_LETTERS: "caption has no letters",
    SKIP_NON_ENGLISH: "caption does not look like English",
    SKIP_UNREADABLE: "the input record could not be read",
}

# What was changed in a caption that was parsed.
REPAIR_HTML = "html_removed"
REPAIR_URL = "url_removed"
REPAIR_TRUNCATED = "truncated"
REPAIR_CONTROL = "control_characters_removed"

REPAIRS = {
    REPAIR_HTML: "HTML tags or entities removed",
    REPAIR_URL: "URLs removed",
    REPAIR_TRUNCATED: "caption truncated to the word/character limit",
    REPAIR_CONTROL: "control characters removed",
}

_TAG = re.compile(r"<\s*/?\s*[A-Za-z!][^<>]{0,500}>")
_ENTITY = re.compile(r"&(?:[A-Za-z]{2,8}|#\d{1,7}|#x[0-9A-Fa-f]{1,6});")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WORD = re.compile(r"[^\W\d_]+")

# Function words: English captions almost always contain some; many Latin-script languages
# have their own that English lacks. Words shared with English ("a", "in", "no") are left out.
_ENGLISH_FUNCTION_WORDS = frozenset(
    """
    a an the of in on at with and or is are was were to for by from near next his her their its
    this that these those there while as into onto over under some two three has have it he she
    they up down out off behind beside above below
    """.split()
)
_FOREIGN_FUNCTION_WORDS = frozenset(
    """
    el la los las un una unos unas y de del al con por para es está están une les des du et avec dans sur
    le sous est sont der das ein eine einen und mit auf im ist sind von zu il gli di che della nel
    sul sono um uma com na os em é são het een van op zijn ze niet ook och är på att ett
    """.split()
)


@dataclass(frozen=True)
class UnreadableCaption:
    """Stands for an input record that could not be read, so it is counted, not lost.

    Readers yield it in place of a caption; ``where`` says which record ("file.jsonl:12").
    """

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class CleanCaption:
    """The outcome of :func:`clean_caption`: ``text`` to parse, or ``skipped`` with a reason."""

    text: str | None
    skipped: str | None = None
    repairs: tuple[str, ...] = ()


def _is_latin_letter(ch: str) -> bool:
    if ch.isascii():
        return True
    try:
        return unicodedata.name(ch).startswith("LATIN")
    except ValueError:
        return False


def looks_non_english(text: str) -> bool:
    """A cheap language check for captions: mostly non-Latin letters, or more foreign than
    English function words (at least two). Caption fragments without any function word
    ("two dogs playing frisbee") count as English."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return False
    latin = sum(1 for ch in letters if _is_latin_letter(ch))
    if latin < 0.5 * len(letters):
        return True
    words = [w.lower() for w in _WORD.findall(text)]
    foreign = sum(1 for w in words if w in _FOREIGN_FUNCTION_WORDS)
    if foreign < 2:
        return False
    english = sum(1 for w in words if w in _ENGLISH_FUNCTION_WORDS)
    return foreign > english


def clean_caption(caption, max_words: int = DEFAULT_MAX_WORDS, max_chars: int = DEFAULT_MAX_CHARS) -> CleanCaption:
    """Repair or reject one raw caption.

    Args:
        caption: anything; only strings can be parsed.
        max_words: longer captions are cut to this many words (``truncated`` repair).
        max_chars: and to this many characters.

    Returns:
        A :class:`CleanCaption`; exactly one of ``text`` and ``skipped`` is set.
    """
    if caption is None:
        return CleanCaption(None, SKIP_MISSING)
    if isinstance(caption, UnreadableCaption):
        return CleanCaption(None, SKIP_UNREADABLE)
    if not isinstance(caption, str):
        return CleanCaption(None, SKIP_NOT_TEXT)

    repairs = []
    text = caption
    # Bound the work on pathological inputs before any regex runs over them.
    if len(text) > 8 * max_chars:
        text = text[: 8 * max_chars]
        repairs.append(REPAIR_TRUNCATED)
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
        repairs.append(REPAIR_CONTROL)
    if "<" in text and _TAG.search(text):
        text = _TAG.sub(" ", text)
        repairs.append(REPAIR_HTML)
    if "&" in text and _ENTITY.search(text):
        text = html.unescape(text)
        if REPAIR_HTML not in repairs:
            repairs.append(REPAIR_HTML)
    if _URL.search(text):
        text = _URL.sub(" ", text)
        repairs.append(REPAIR_URL)

    words = text.split()
    if not words:
        return CleanCaption(None, SKIP_EMPTY, tuple(repairs))
    if len(words) > max_words:
        words = words[:max_words]
        if REPAIR_TRUNCATED not in repairs:
            repairs.append(REPAIR_TRUNCATED)
    text = " ".join(words)
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars + 1)
        text = text[: cut if cut > 0 else max_chars]
        if REPAIR_TRUNCATED not in repairs:
            repairs.append(REPAIR_TRUNCATED)

    if not any(ch.isalpha() for ch in text):
        return CleanCaption(None, SKIP_NO_LETTERS, tuple(repairs))
    if looks_non_english(text):
        return CleanCaption(None, SKIP_NON_ENGLISH, tuple(repairs))
    return CleanCaption(text, None, tuple(repairs))
