"""A Penn-Treebank-style caption tokenizer that reproduces the COCO caption toolkit's tokenisation.

The COCO toolkit (pycocoevalcap) tokenises captions with Stanford's Java ``PTBTokenizer``
(CoreNLP 3.4.1, options ``-preserveLines -lowerCase``). This module is an independent Python
tokenizer written for this project from the *observed* output of that program: its rules were
found by running the jar on the COCO captions and on probe strings and recording what it emits
(see ``tests/fixtures/ptb_java_reference.json``). It is not a translation of the Java lexer.

What it reproduces (all lower-cased, as with ``-lowerCase``):

* words, hyphenated/underscored/slashed compounds, numbers (1,000  3.5  10:30  -5), dotted
  names (www.example.com), e-mail addresses, http URLs, @handles;
* clitics split off the Treebank way: "ca n't", "man 's", "gon na", "can not";
* double quotes turned into opening/closing pairs of backquotes/apostrophes, brackets into
  -LRB- etc., dashes into "--", ellipses into "...";
* abbreviations and acronyms keeping their period, including the Java program's habit of adding
  a sentence-final "." after some of them, which depends on the text that follows (even on the
  next caption, since the toolkit tokenises all captions as one stream);
* a few tokens that span a space ("1 1/2", phone numbers: joined with U+00A0), and the deletion
  of characters the Java program cannot tokenise (emoji, ...).

Measured agreement (``benchmarks/metrics.py``, ``tests/test_metrics_tokenization.py``): identical
output on all 25,014 COCO val2017 captions, the 29,902 MAGIC Karpathy-test references and
predictions, 236 hand-made hard cases and 50,000 generated caption-like strings. Known
differences remain for unusual glued strings (an e-mail address or URL followed by several
punctuation marks, curly quotes glued to other quotes, words glued to clitics in odd ways) and
for some end-of-text effects of the Java lexer beyond the ones reproduced here.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Sequence

__all__ = ["tokenize_lines"]

# --- character classes ---------------------------------------------------------------------------

# Characters the Java program drops (observed): they separate tokens like a space does.
_DROPPED = (
    "\u2010\u2011\u2012\u2024\u2025\u2027\u203c\u203d\u2043\u2045\u2046\u2047\u2048\u2049"
    "\u204a\u204b\u204c\u204d\u204e\u204f\u2050\u2051\u2052\u2053\u2054\u2055\u2056\u2057"
    "\u2058\u2059\u205a\u205b\u205c\u205d\u205e\u2150\u2151\u2152\u215f\u2189\u3003\u3004"
    "\u3007\u3008\u3009\u300a\u300b\u300c\u300d\u300e\u300f\u3010\u3011\u3012\u3013\u3014"
    "\u3015\u3016\u3017\u3018\u3019\u301a\u301b\u301c\u301d\u301e\u301f\u3020\u302a\u302b"
    "\u302c\u302d\u302e\u302f\u3030\u3036\u3037\u303d\u303e\u303f\ufe0f\x7f"
)
_DROPPED_RANGES = (
    (0x20A1, 0x20A3), (0x20A5, 0x20AB), (0x20AD, 0x20BF), (0x2160, 0x2188), (0x3021, 0x3029), (0x3038, 0x303A)
)

# Single characters the Java program rewrites into a fixed token.
_FIXED = {
    "(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-",
    "\u201c": "``", "\u201d": "''", "\u00ab": "``", "\u00bb": "''",
    "\u2018": "`", "\u201b": "`", "\u2039": "`", "\u203a": "'",
    "\u2013": "--", "\u2014": "--", "\u2015": "--", "\u2026": "...",
    "\u00a2": "cents", "\u00a3": "#", "\u00a4": "$", "\u20ac": "$", "\u20a0": "$",
    "\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3",
}


@functools.lru_cache(maxsize=4096)
def _is_dropped(ch: str) -> bool:
    code = ord(ch)
    if code > 0xFFFF or ch in _DROPPED:
        return True
    if any(lo <= code <= hi for lo, hi in _DROPPED_RANGES):
        return True
    cat = unicodedata.category(ch)
    # Control/format/unassigned characters and spaces separate tokens; the soft hyphen is
    # handled on its own (removed inside a word, a hyphen elsewhere).
    return (cat in ("Cc", "Cf", "Cn", "Zs", "Zl", "Zp") and ch != "\u00ad") or ch.isspace()


def _class_of(accept) -> str:
    """Regex class body listing the BMP characters for which ``accept(char)`` holds."""
    ranges, start, prev = [], None, None
    for code in range(0x80, 0x10000):
        if accept(chr(code)):
            if start is None:
                start = code
            elif code != prev + 1:
                ranges.append((start, prev))
                start = code
            prev = code
    if start is not None:
        ranges.append((start, prev))
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if a != b else f"\\u{a:04x}" for a, b in ranges)


@functools.lru_cache(maxsize=1)
def _mark_class() -> str:
    """Combining marks: the Java program keeps them inside words (cafe + U+0301, Devanagari)."""
    return _class_of(
        lambda c: unicodedata.category(c) in ("Mn", "Mc", "Me") and c != "\ufe0f" and not "\u302a" <= c <= "\u302f"
    )


@functools.lru_cache(maxsize=1)
def _numeric_class() -> str:
    """Numeric characters that are not decimal digits (fractions, superscripts): never part of a word."""
    return _class_of(lambda c: unicodedata.category(c) in ("No", "Nl"))


# --- abbreviations (observed classes) -------------------------------------------------------------

# "Jan." etc.: keep the period, and add a sentence-final "." when what follows is the end of the
# text or a word starting with a capital letter.
_FINAL_ABBREVIATIONS = frozenset(
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri "
    "ala ariz calif colo conn fla ga ind kan kans ky md mich minn mo mont neb nev okla penn tenn va vt "
    "wis wisc wyo rd blvd sq sr jr bros esq co corp inc ltd cos plc assn univ intl bldg est etc al seq "
    "ct bancorp tel bhd ext".split()
)
# The same, but only when capitalised or upper case (the lower-case form is an ordinary word).
_FINAL_ABBREVIATIONS_CAPITALISED = frozenset("ark del ill la mass miss ore pa tex wash".split())
_FINAL_ABBREVIATIONS_NOT_UPPER = frozenset(["pty", "ptys"])
# Titles and the like: keep the period, never followed by an extra ".".
_TITLES = frozenset(
    "mr mrs ms dr prof st mt ft ave pres gov gen sen rep rev hon capt col lt sgt cpl maj adm cmdr det "
    "insp supt messrs msgr ph assoc dept natl cie vs cf brig lieut mme mlle sens reps pfc ens atty ste "
    "wm jos asst adj adv elec".split()
)
_TITLES_NOT_UPPER = frozenset(["mfg"])
# Keep the period only in front of a number ("fig. 3", "no. 5").
_NUMBER_ABBREVIATIONS = frozenset("fig figs no nos op pp ca art prop".split())

# Capitalised words after which a one-letter abbreviation or an acronym is read as ending a
# sentence (observed: "U.S. The x" -> "u.s. . the x", "x. The x" -> "x . the x").
_SENTENCE_STARTERS = frozenset(
    "you he she it we they her our their this that these there here then now so but yet if when "
    "while what since after however last many some one such in at as an a the other about more".split()
)

# Whole words the Treebank splits in two, all after their third letter.
_SPLIT_WORDS = frozenset(["cannot", "gonna", "gotta", "wanna", "gimme", "lemme"])
_FAST_WORD = re.compile(r"[a-z]+")


# --- token patterns -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _patterns():
    marks, numeric = _mark_class(), _numeric_class()
    apos = "['\u2019]"  # the right single quotation mark works as an apostrophe
    letter = f"(?:(?![{numeric}])[^\\W\\d_]|[{marks}])"
    alnum = f"(?:(?![{numeric}])[^\\W_]|[{marks}])"
    p = {
        # Observed: a URL or address keeps some trailing punctuation ("http://a.b/c]", "me@x.org:").
        "url": r"https?://[\w\-.~:/?#@!$&*+,;=%]*[\w/=#&%~+:;'\]\u2019\u201d]+",
        "email": r"[\w.+\-]*\w@\w[\w\-]*(?:\.\w[\w\-]*)*[!?:;,=*\]'\u2019\u201d]*",
        # Observed: a curly opening quote stays on a www. name ("\u201cwww.x.com").
        "quoted_www": r"[\u201c\u2018]www\.\w+(?:[.\-]\w+)*",
        "handle": r"@\w+",
        "hashtag": rf"#{letter}\w*",
        "acronym": rf"[Pp][Hh]\.[Dd]\.|(?:{alnum}+-)*{letter}(?:\.{letter})+\."
        rf"(?:-(?:{alnum}+-)*{letter}(?:\.{letter})+\.)*",
        # www.example.com, a1.b2; observed: "!" and "?" join letters the same way ("ab!cd").
        "dotted": rf"{letter}{alnum}*(?:[-_]{alnum}+)*(?:[.!?]{letter}{alnum}*(?:[-_]{alnum}+)*)+",
        "word": rf"{alnum}+(?:[-_/]{alnum}+)*",
        # l'amour, o'clock, qu'il, c'mon; and a vowel-apostrophe-vowel inside a word (Hawai'i, Pe'e).
        "apos_word": rf"(?:[LlDdOoCcNn]|[Qq][Uu]){apos}{letter}+|[Oo][Ll]{apos}|[Mm][Aa]{apos}[Aa][Mm]"
        rf"|{letter}+[aeiouAEIOU]{apos}[aeiouAEIOU]{letter}*",
        "apos_prefix": rf"[YyJj]{apos}",
        # Observed: at the very end of the text 're, 've and 'll are not split off ("x 'll" -> "x ` ll").
        "clitic": rf"{apos}(?:[Ss]|[Dd]|[Mm])(?!{letter})"
        rf"|{apos}(?:[Rr][Ee]|[Vv][Ee]|[Ll][Ll])(?=(?!{letter})[\s\S])",
        "elision": rf"{apos}[Nn]{apos}|{apos}(?:[Ee][Mm]|[Cc][Aa][Uu][Ss][Ee]|[Tt][Ii][Ll]|[Nn])(?!{letter})",
        "prefix": rf"(?:[Pp][Rr][Oo]|[Aa][Nn][Tt][Ii])-(?!{alnum})",
        "superscripts": r"[\u00b2\u00b3\u00b9\u2070-\u2079]+",
        "year": rf"{apos}\d\d(?:s|(?=\s|$))",
        "tis": rf"{apos}[Tt](?=(?:[Ii][Ss]|[Ww][Aa][Ss])(?!\w))",
        "number": r"[-+]?(?:\d+(?:[,.:]\d+)*|[.,:]\d+(?:[,.:]\d+)*)",
        "amp_word": r"[A-Z]+&[A-Z]+",
        "plus_word": r"[Cc]\+\+|[Cc]#",
        "currency_word": r"[A-Z]+\$",
        # Observed: at most five dots make one "..." ("......" -> "... .").
        "ellipsis": r"\.{3,5}|\.(?: \.){2,}",
        "bangs": r"[!?]+",
        "stars": r"\*+",
        "underscores": r"_+",
        "hashes": r"#+",
        "angles": r"<<|>>",
        "dashes": r"-{2,}",
        "backquotes": r"``",
        "quotes": r"''|\u2019\u2019",
        # Observed: an emoticon is only recognised when some character follows it.
        "emoticon": r"(?:[:;=]-?[()\[\]DPdp]|\^_\^)(?=[\s\S])",
        "html": rf"</?{letter}{alnum}*/?>",
        "entity": r"&(?:amp|lt|gt|quot|#\d+|nbsp);",
        # Fractions and phone numbers span a space; the Java program joins them with U+00A0.
        "cross_space": r"\d+ \d+/\d+(?![\d/])|(?:\d{2,4} |\(\d{3}\) ?)\d{3,4}-\d{4}(?!\d)"
        r"|(?:\d{2,4}|\(\d{3}\))(?: \d{3,4}){2,}(?!\d)",
    }
    compiled = {k: re.compile(v) for k, v in p.items()}
    return compiled, re.compile(letter), re.compile(alnum)


_BY_FIRST_LETTER = ("url", "email", "acronym", "dotted", "word", "apos_word", "apos_prefix", "amp_word",
                    "plus_word", "currency_word", "prefix")
_BY_FIRST_DIGIT = ("email", "word", "number", "acronym", "cross_space")
_BY_PUNCT = {
    "'": ("clitic", "elision", "year", "tis", "quotes"),
    "\u2019": ("clitic", "elision", "year", "tis", "quotes"),
    ".": ("ellipsis", "number"),
    ",": ("number",),
    ":": ("number", "emoticon"),
    ";": ("emoticon",),
    "=": ("emoticon",),
    "^": ("emoticon",),
    "-": ("number", "dashes"),
    "+": ("number",),
    "!": ("bangs",),
    "?": ("bangs",),
    "*": ("stars",),
    "_": ("underscores", "email"),
    "#": ("hashtag", "hashes"),
    "@": ("handle",),
    "<": ("angles", "html"),
    ">": ("angles",),
    "`": ("backquotes",),
    "&": ("entity",),
    "(": ("cross_space",),
    "\u201c": ("quoted_www",),
    "\u2018": ("quoted_www",),
}
for _sup in "\u00b2\u00b3\u00b9\u2070\u2071\u2074\u2075\u2076\u2077\u2078\u2079":
    _BY_PUNCT[_sup] = ("superscripts",)
_ASCII_WORD = re.compile(r"[A-Za-z]+")
_ENTITY_VALUES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&nbsp;": None}


def _dash_run(run: str) -> str:
    # Observed: two to four hyphens become "--", longer runs stay as they are.
    return "--" if len(run) <= 4 else run


class _Lexer:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[int, str]] = []  # (start offset, token)
        self.rx, self.letter_rx, self.alnum_rx = _patterns()
        self.letters_rx = re.compile(f"(?:{self.letter_rx.pattern})+")

    # --- helpers on the raw text ---
    def _is_letter(self, i: int) -> bool:
        return i < len(self.text) and self.letter_rx.match(self.text, i) is not None

    def _is_alnum(self, i: int) -> bool:
        return i < len(self.text) and self.alnum_rx.match(self.text, i) is not None

    def _skip_space(self, i: int) -> int:
        n = len(self.text)
        while i < n and self.text[i] in " \n":
            i += 1
        return i

    def _starter_follows(self, i: int) -> bool:
        """True when, after whitespace, a sentence-starting word follows and is itself followed by whitespace."""
        j = self._skip_space(i)
        m = _ASCII_WORD.match(self.text, j)
        if m is None or m.end() >= len(self.text):
            return False
        w = m.group()
        if j == i:
            return False
        if w == "Mr" and self.text[m.end() : m.end() + 2] in (". ", ".\n"):
            return True  # observed: "U.S. Mr. x" -> "u.s. . mr. x" (not so for Dr., Mrs., ...)
        if self.text[m.end()] not in " \n":
            return False
        if not (w[0].isupper() and (w[1:].islower() or w[1:].isupper() or len(w) == 1)):
            return False
        return w.lower() in _SENTENCE_STARTERS

    def _capital_or_end_follows(self, i: int) -> bool:
        text = self.text
        j = self._skip_space(i)
        # Observed: two or more spaces after the period also count as a sentence end.
        if j >= len(text) or text[j].isupper() or j - i >= 2:
            return True
        # Observed end-of-text quirk: "Jan.)" as the very last characters also gets the extra "."
        # ("jan. . -rrb-"), although "Jan.) The" and "Jan.)" before more text do not.
        return j == i and j == len(text) - 1 and not self._is_alnum(j) and text[j] not in ",;:!"

    def _digit_follows(self, i: int) -> bool:
        j = self._skip_space(i)
        return j < len(self.text) and self.text[j].isdigit()

    # --- the abbreviation decision for WORD followed by "." ---
    def _abbreviation(self, word: str, end: int) -> bool | None:
        """For ``word`` + "." ending at ``end`` (after the period): None when the period does not
        belong to the word, else whether a sentence-final "." follows as a token of its own."""
        low = word.lower()
        capitalised = word[0].isupper()
        upper = word.isupper()
        if (
            low in _FINAL_ABBREVIATIONS
            or (low in _FINAL_ABBREVIATIONS_CAPITALISED and capitalised)
            or (low in _FINAL_ABBREVIATIONS_NOT_UPPER and not upper)
        ):
            if low == "co" and re.match(r" +Ltd\b", self.text[end:]):
                return False  # observed: "Co. Ltd." stays one name ("co. ltd.")
            return self._capital_or_end_follows(end)
        if low in _TITLES or (low in _TITLES_NOT_UPPER and not upper):
            return False
        if low in _NUMBER_ABBREVIATIONS and self._digit_follows(end):
            return False
        return None

    def emit(self, start: int, token: str) -> None:
        self.tokens.append((start, token))

    def run(self) -> list[tuple[int, str]]:
        text, n = self.text, len(self.text)
        rx = self.rx
        i = 0
        while i < n:
            ch = text[i]
            if ch in " \n":
                i += 1
                continue
            # Fast path: a plain lower-case word followed by a space or the end.
            m = _FAST_WORD.match(text, i)
            if m is not None and (m.end() == n or text[m.end()] in " \n") and m.group() not in _SPLIT_WORDS:
                self.emit(i, m.group())
                i = m.end()
                continue
            if self._is_letter(i):
                names = _BY_FIRST_LETTER
            elif ch.isdecimal():
                names = _BY_FIRST_DIGIT
            else:
                names = _BY_PUNCT.get(ch, ())
            best_name, best_end = None, i
            for name in names:
                m = rx[name].match(text, i)
                if m is not None and m.end() > best_end:
                    best_name, best_end = name, m.end()
            if best_name is None:
                i = self._single(i)
            else:
                i = self._token(best_name, i, best_end)
        return self.tokens

    def _single(self, i: int) -> int:
        text = self.text
        ch = text[i]
        if ch == '"':
            # Observed: an opening quote only before an ASCII letter, digit or "$" ('"Über' -> "'' über").
            nxt = text[i + 1 : i + 2]
            self.emit(i, "``" if nxt.isascii() and (nxt.isalnum() or nxt == "$") else "''")
        elif ch == "\u2019":
            self.emit(i, "'")
        elif ch == "'":
            nxt = i + 1
            # Observed: an opening quote when an ASCII letter and then anything but a space follow.
            opening = (
                nxt + 1 < len(text) and text[nxt].isascii() and text[nxt].isalpha() and text[nxt + 1] not in " \n"
            )
            self.emit(i, "`" if opening else "'")
        elif ch == ".":
            self.emit(i, ".")
        elif ch == "\u00ad":
            self.emit(i, "-")
        else:
            self.emit(i, _FIXED.get(ch, ch))
        return i + 1

    def _token(self, name: str, start: int, end: int) -> int:
        text = self.text
        tok = text[start:end]
        if name in ("word", "dotted"):
            return self._word(start, end)
        if name == "acronym":
            self.emit(start, tok)
            # Observed: "Ph.D." behaves like "Jan." (a "." before any capital), other acronyms
            # only before a sentence-starting word.
            if tok.lower() == "ph.d.":
                extra = self._capital_or_end_follows(end)
            else:
                extra = self._starter_follows(end)
            if extra:
                self.emit(end - 1, ".")
            return end
        if name == "ellipsis":
            self.emit(start, "...")
        elif name == "dashes":
            self.emit(start, _dash_run(tok))
        elif name == "entity":
            value = _ENTITY_VALUES.get(tok, tok)
            if tok == "&quot;":
                value = "``" if self._is_alnum(end) else "''"
            if value is not None:
                self.emit(start, value)
        elif name == "emoticon":
            # Round brackets inside an emoticon are escaped, square ones are not (observed).
            self.emit(start, tok.replace("(", "-LRB-").replace(")", "-RRB-"))
        elif name == "cross_space":
            self.emit(start, "".join(_FIXED.get(c, c) for c in tok).replace(" ", "\u00a0"))
        elif name == "tis":
            self.emit(start, tok[0] + "t")
        elif name == "clitic" or name == "quotes":
            # Observed: clitics and doubled quotes come out with ASCII apostrophes.
            self.emit(start, tok.replace("\u2019", "'"))
        else:
            self.emit(start, tok)
        return end

    def _word(self, start: int, end: int) -> int:
        text, n = self.text, len(self.text)
        word = text[start:end]
        # "isn't": the n of the negation belongs to the clitic. Observed: only after a word of
        # ASCII letters, and letters right after the clitic stay with it ("don'tcha" -> "do n'tcha").
        if (
            word[-1:] in ("n", "N")
            and len(word) > 1
            and text[end : end + 2].lower() in ("'t", "\u2019t")
            and _ASCII_WORD.fullmatch(word)
        ):
            tail = self.letters_rx.match(text, end + 2)
            stop = tail.end() if tail else end + 2
            self.emit(start, word[:-1])
            self.emit(end - 1, text[end - 1 : stop].replace("\u2019", "'"))
            return stop
        if word.lower() in _SPLIT_WORDS and not self._is_letter(end):
            self.emit(start, word[:3])
            self.emit(start + 3, word[3:])
            return end
        if end < n and text[end] == ".":
            after = end + 1
            extra = self._abbreviation(word, after) if word.isalpha() else None
            if extra is not None:
                self.emit(start, word + ".")
                if extra:
                    self.emit(end, ".")
                return after
            if len(word) == 1 and word.isalpha():
                # A one-letter abbreviation ("J. Smith") unless a sentence starts after it.
                if self._starter_follows(after):
                    self.emit(start, word)
                    self.emit(end, ".")
                else:
                    self.emit(start, word + ".")
                return after
            if text[after : after + 1] in (",", ";", ":"):
                self.emit(start, word + ".")  # observed: "ab.," -> "ab. ,"
                return after
        self.emit(start, word)
        return end


def _normalise(text: str) -> str:
    """Turn characters the Java program drops into spaces (line breaks stay), left single quotes
    into backquotes, and drop soft hyphens inside words."""
    out = []
    for k, ch in enumerate(text):
        if ch == "\n" or ch == " ":
            out.append(ch)
        elif ch in "\u2018\u201b" and not text.startswith("www.", k + 1):
            out.append("`")
        elif ch == "\u00ad":
            prev = text[k - 1] if k else ""
            nxt = text[k + 1] if k + 1 < len(text) else ""
            # Inside a word the soft hyphen disappears; elsewhere it is a hyphen.
            out.append("" if prev.isalnum() and nxt.isalnum() else ch)
        elif ch.isascii() and ch.isprintable():
            out.append(ch)
        elif _is_dropped(ch):
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def tokenize_lines(lines: Sequence[str]) -> list[str]:
    """Tokenise captions, one per line, as the COCO toolkit's Java tokenizer does.

    ``lines`` must not contain line breaks. The captions are read as one stream (a token's
    treatment can depend on the start of the next caption, as in the toolkit). Returns, per
    line, the lower-cased tokens joined by single spaces, punctuation tokens still included.
    """
    text = "\n".join(lines)
    if text.count("\n") != max(len(lines) - 1, 0):
        raise ValueError("tokenize_lines: captions must not contain '\\n' (replace line breaks first)")
    text = _normalise(text)
    line_starts, offset = [], 0
    for line in text.split("\n"):
        line_starts.append(offset)
        offset += len(line) + 1
    out: list[list[str]] = [[] for _ in line_starts]
    line = 0
    for start, token in _Lexer(text).run():
        while line + 1 < len(line_starts) and start >= line_starts[line + 1]:
            line += 1
        out[line].append(token.lower())
    return [" ".join(toks) for toks in out]
