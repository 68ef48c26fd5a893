"""A pure-Python reimplementation of the tokenizer the COCO caption toolkit runs.

pycocoevalcap tokenizes every caption with Stanford CoreNLP 3.4.1's ``PTBTokenizer``
(``-preserveLines -lowerCase``, default PTB3 escaping) before scoring. That is a Java program;
this module reproduces its output for machines without Java. Its rule table restates the rules
of that version's lexer specification (``PTBLexer.flex``, Stanford CoreNLP 3.4.1, GPL-2.0-or-later):
the abbreviation lists and character ranges are the lexer's. It was checked token for token
against the 3.4.1 jar shipped with pycocoevalcap (``tests/test_metrics_tokenization.py``;
``benchmarks/metrics.py`` counts differences on 29,902 real captions).

The Java tokenizer is a JFlex scanner: at each position every rule is tried, the longest match
wins (trailing context counts towards the length), and ties go to the rule listed first. The
scanner below works the same way over an ordered rule table. Rules that the 3.4.1 jar applies
with its default options only are modelled; options the toolkit never sets are not. One known
gap: where Java lower-cases a capital sigma, its choice between the two small sigmas depends on
word-boundary rules that :func:`_java_lower` only approximates.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable, NamedTuple, Sequence

__all__ = ["ptb_tokenize_lines"]


def _char_class(predicate: Callable[[str], bool]) -> str:
    """Build a regex character-class body for all BMP characters satisfying ``predicate``.

    The Java scanner reads UTF-16 code units, so characters outside the BMP never match its
    letter or digit classes; restricting the classes to the BMP reproduces that.
    """
    ranges = []
    start = None
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            hit = False
        else:
            hit = predicate(chr(code))
        if hit and start is None:
            start = code
        elif not hit and start is not None:
            ranges.append((start, code - 1))
            start = None
    if start is not None:
        ranges.append((start, 0xFFFF))
    parts = []
    for lo, hi in ranges:
        parts.append(f"\\u{lo:04x}" if lo == hi else f"\\u{lo:04x}-\\u{hi:04x}")
    return "".join(parts)


# JFlex's [:letter:], [:digit:] and [:uppercase:] are Java's Character.isLetter/isDigit/isUpperCase.
_JL = "[" + _char_class(str.isalpha) + "]"
_JD = "[" + _char_class(lambda c: c.isdecimal()) + "]"
_UPPER = "[" + _char_class(lambda c: c.isupper()) + "]"
# Characters the tokenizer's LETTER macro adds to [:letter:] (combining marks and similar, plus the
# soft hyphen), as code-point ranges.
_LETTER_EXTRA = (
    "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d\u0384\u0385"
    "\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525\u055a-\u055f\u0591-\u05bd"
    "\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f\u064b-\u065e\u0670\u06d6-\u06ef"
    "\u06fa-\u06ff\u070f\u0711\u0730-\u074f\u0750-\u077f\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903"
    "\u093c\u093e-\u094e\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd"
    "\u09d7\u09e2\u09e3\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2"
    "\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48\u0e30-\u0e3a"
    "\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
)
_LETTER = f"(?:{_JL}|[{_LETTER_EXTRA}]|&[aeiouAEIOU](?i:acute|grave|uml);)"
_LD = f"(?:{_LETTER}|{_JD})"

_SPACE = "[ \t\u00a0\u2000-\u200a\u3000]"
_NEWLINE = "(?:\r\n|\r|\n|\u2028|\u2029|\x0b|\x0c|\x85)"
_SPACENL = f"(?:{_SPACE}|{_NEWLINE})"
_SGML = (
    r"<(?:[!?][A-Za-z-][^>\r\n]*"
    r"|[A-Za-z][A-Za-z0-9_:.-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.-]*[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\")"
    r"|[A-Za-z][A-Za-z0-9_:.-]*))*[ ]*/?"
    r"|/[A-Za-z][A-Za-z0-9_:.-]*)[ ]*>"
)
_APOS = "(?:['\u0092\u2019]|(?i:&apos;))"
_APOSETC = f"(?:{_APOS}|[`\u0091\u2018\u201b])"
_REDAUX = f"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"
_SWORD = "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
_SREDAUX = f"(?i:n){_APOSETC}(?i:t)"
_WORD = f"{_LETTER}{_LD}*(?:[.!?]{_LETTER}{_LD}*)*"
_HYPHEN = "[-_\u058a\u2010\u2011]"
_NUM = "(?:[0-9]*(?:[.:,\u00ad\u066b\u066c][0-9]+)+|[0-9]+)".replace("[0-9]", _JD)

# Acronym alternatives are kept apart: Python's alternation is first-match, JFlex's is longest-match.
_ACRO_ALTS = [
    r"[A-Za-z](?:\.[A-Za-z])*",
    r"(?i:canada|sino|korean|eu|japan|non)-(?i:u\.s)",
    r"(?i:u\.s\.-)(?i:u\.k|u\.s\.s\.r)",
]
_ACRO2_ALTS = [r"[A-Za-z](?:\.[A-Za-z])+"] + _ACRO_ALTS[1:]


def _ci(words: str) -> str:
    """Case-insensitive literal alternatives; a leading ``[X]`` keeps that first letter case-sensitive."""
    out = []
    for word in words.split("|"):
        if word.startswith("[") and word[2] == "]":
            out.append(f"{word[:3]}(?i:{word[3:]})")
        else:
            out.append(f"(?i:{word})")
    # Longest alternatives first, so that first-match alternation behaves like longest-match here.
    out.sort(key=len, reverse=True)
    return "(?:" + "|".join(out) + ")"


_ABMONTH = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
_ABDAYS = "Mon|Tue|Tues|Wed|Thu|Thurs|Fri"
_ABSTATE = (
    "Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|Minn"
    "|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo"
)
_ABCOMP = "Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"
_ABNUM = "tel|est|ext|sq"
_ABPTIT = r"Jr|Sr|Bros|Ed\.D|Ph\.D|Blvd|Rd|Esq"
_ABBREV1 = _ci("|".join([_ABMONTH, _ABDAYS, _ABSTATE, _ABCOMP, _ABNUM, _ABPTIT, "etc|al|seq|Bldg"])) + r"\."
_ABTITLE = (
    "Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt"
    "|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme"
    "|Msgr|Sfc"
)
_ABCOMP2 = "Invt|Elec|Natl|M[ft]g|Dept"
_ABBREV4_ALTS = [_ci("|".join([_ABTITLE, r"vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph", _ABCOMP2]))] + _ACRO_ALTS
_ABBREV3 = _ci("ca|figs?|prop|nos?|art|bldg|pp|op") + r"\."
_ACRONYM_FOLLOWERS = (
    "[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er|[H]ere"
    "|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\\.|[M]s\\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur|[S]he"
    "|[S]ince|[S]o|[S]ome|[S]uch|[T]hat|[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e|[W]hen"
    "|[W]hile|[W]hat|[Y]et|[Y]ou"
)
_FILENAME_EXT = _ci(
    "bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl"
    "|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip"
)
_INSENTP = "[,;:\u3001]"
_MISCSYMBOL = (
    "[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387\u05be\u05c0"
    "\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d\u0703-\u070d"
    "\u07f6-\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044"
    "\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f"
    "\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)

_SINGLE_QUOTE = re.compile("(?i:&apos;)|'")
_DOUBLE_QUOTE = re.compile('(?i:&quot;)|"')
_QUOTE_MAP = [
    (re.compile("[\u0091\u2018\u201b\u2039]"), "`"),
    (re.compile("[\u0092\u2019\u203a]"), "'"),
    (re.compile("[\u0093\u201c\u00ab]"), "``"),
    (re.compile("[\u0094\u201d\u00bb]"), "''"),
]
_AMP = re.compile("(?i:&amp;)")
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = [
    (re.compile("\u00a2"), "cents"),
    (re.compile("\u00a3"), "#"),
    (re.compile("[\u0080\u00a4\u20a0\u20ac]"), "$"),
]

# Sentinel token for a line break (the Java tokenizer's -preserveLines output).
NEWLINE_TOKEN = "\n"


def _latex_quotes(tok: str, left: bool) -> str:
    if left:
        tok = _SINGLE_QUOTE.sub("`", tok)
        tok = _DOUBLE_QUOTE.sub("``", tok)
    else:
        tok = _SINGLE_QUOTE.sub("'", tok)
        tok = _DOUBLE_QUOTE.sub("''", tok)
    for pattern, replacement in _QUOTE_MAP:
        tok = pattern.sub(replacement, tok)
    return tok


def _parens(tok: str) -> str:
    return tok.replace("(", "-LRB-").replace(")", "-RRB-")


# Actions take the matched main text and return (token or None, characters consumed). Returning
# fewer characters than matched is JFlex's yypushback.
def _keep(text: str):
    return text, len(text)


def _drop(text: str):
    return None, len(text)


def _pushback(n: int):
    def action(text: str):
        return text[:-n], len(text) - n

    return action


def _map(fn: Callable[[str], str]):
    def action(text: str):
        return fn(text), len(text)

    return action


def _abbrev_with_period_after(text: str):
    # The abbreviation keeps its period and the period is also returned again as a token.
    return text, len(text) - 1


def _acronym_before_sentence(text: str):
    if len(text) == 2:  # "I." -> "I" then "."
        return text[:1], 1
    return text, len(text) - 1


def _hyphens(text: str):
    return ("--" if 3 <= len(text) <= 4 else text), len(text)


def _no_soft_hyphen(text: str) -> str:
    # Soft hyphens only mark possible line breaks; a token made of nothing else becomes "-".
    return text.replace("\u00ad", "") or "-"


def _currency(text: str) -> str:
    for pattern, replacement in _CURRENCY:
        text = pattern.sub(replacement, text)
    return text


_NEWLINE_RE = re.compile(_NEWLINE)


def _newline(text: str):
    return NEWLINE_TOKEN, len(text)


class _Rule(NamedTuple):
    patterns: list  # compiled alternatives; group "m" is the token part, the rest trailing context
    action: Callable[[str], tuple]


def _rule(alternatives, action=_keep, context: str | None = None) -> _Rule:
    if isinstance(alternatives, str):
        alternatives = [alternatives]
    compiled = []
    for alt in alternatives:
        src = f"(?P<m>{alt})" + (f"(?:{context})" if context else "")
        compiled.append(re.compile(src, re.DOTALL))
    return _Rule(compiled, action)


def _build_rules() -> list[_Rule]:
    r = []
    r.append(_rule(r"(?i:c\+\+)"))
    r.append(_rule(r"(?i:[cf]#)"))
    r.append(_rule(r"(?i:cannot)", _pushback(3)))
    r.append(_rule(r"(?i:'twas)", _pushback(3)))
    r.append(_rule(r"(?i:'tis)", _pushback(2)))
    r.append(_rule(r"(?i:gonna|gotta|lemme|gimme|wanna)", _pushback(2)))
    r.append(_rule(_SGML, _map(lambda t: t.replace(" ", "\u00a0"))))
    r.append(_rule("&(?i:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", _map(lambda t: "--")))
    r.append(_rule(r"(?i:&amp;)", _map(lambda t: "&")))
    r.append(_rule(r"&(?i:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+);"))
    r.append(_rule(_WORD, _map(_no_soft_hyphen), context=_REDAUX))
    r.append(_rule(_SWORD, _map(_no_soft_hyphen), context=_SREDAUX))
    r.append(_rule(_WORD, _map(_no_soft_hyphen)))
    r.append(
        _rule(
            [
                f"{_APOS}(?i:n){_APOS}?",
                f"[lLdDjJ]{_APOS}",
                f"(?i:dunkin|somethin|ol){_APOS}",
                f"{_APOS}(?i:em)",
                f"[A-HJ-XZn]{_APOSETC}{_JL}{_JL}{_JL}*",
                f"{_APOS}[2-9]0(?i:s)",
                f"{_APOS}(?i:till?)",
                f"{_JL}{_JL}*[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_JL}*",
                f"{_APOS}(?i:cause)",
                r"(?i:cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
                f"(?i:o){_APOSETC}(?i:o)",
            ]
        )
    )
    r.append(_rule(f"(?i:y){_APOS}", context=_JL))
    r.append(_rule(r"(?i:https?://)[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]"))
    r.append(
        _rule(
            r"(?:(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
            r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?i:com|net|org|edu)))"
            r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?"
        )
    )
    r.append(
        _rule(
            "(?:(?i:&lt;)|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\\.)*"
            "(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+)(?:(?i:&gt;)|>)?"
        )
    )
    r.append(_rule([r"@[a-zA-Z_][a-zA-Z_0-9]*", f"#{_LETTER}+"]))
    r.append(_rule(_REDAUX, _map(lambda t: _latex_quotes(t, False)), context="[^A-Za-z]"))
    r.append(_rule(_SREDAUX, _map(lambda t: _latex_quotes(t, False)), context="[^A-Za-z]"))
    r.append(_rule(f"{_JD}{{1,2}}[-/]{_JD}{{1,2}}[-/]{_JD}{{2,4}}"))
    r.append(_rule(f"[-+]?{_NUM}", _map(_no_soft_hyphen)))
    r.append(_rule("[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"))
    r.append(
        _rule(
            f"(?:{_JD}{{1,4}}[- \u00a0])?{_JD}{{1,4}}(?:\\\\?/|\u2044){_JD}{{1,4}}",
            _map(lambda t: t.replace(" ", "\u00a0")),
        )
    )
    r.append(_rule("[\u00bc\u00bd\u00be\u2153-\u215e]", _map(lambda t: _FRACTIONS.get(t, t))))
    r.append(
        _rule(
            [
                r"-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-",
                r"(?i:c\.d\.s)",
                r"(?i:pro-)",
                r"(?i:anti-)",
                r"(?i:s)(?:&|(?i:&amp;))(?i:p-500)",
                r"(?i:s)(?:&|(?i:&amp;))(?i:ls)",
                f"(?i:cap){_APOS}(?i:n)",
                f"(?i:c){_APOS}(?i:est)",
            ],
            _map(lambda t: _AMP.sub("&", t)),
        )
    )
    r.append(_rule(r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"))
    r.append(_rule(r"[A-Z]*\$|#"))
    r.append(
        _rule(
            "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
            _map(_currency),
        )
    )
    r.append(
        _rule(
            [alt + r"\." for alt in _ACRO_ALTS],
            _acronym_before_sentence,
            context=f"{_SPACENL}+(?:{_ci(_ACRONYM_FOLLOWERS)}|{_SGML}){_SPACENL}",
        )
    )
    r.append(_rule(_ABBREV3, context=f"{_SPACENL}?{_JD}"))
    r.append(_rule(r"(?:(?i:pt)[eyEY]|(?i:co))\.", context=f"{_SPACE}(?i:ltd|lim)"))
    r.append(
        _rule(_ABBREV1, _abbrev_with_period_after, context=f"{_SPACENL}(?:{_SPACENL}|{_UPPER}|{_SGML})")
    )
    r.append(_rule(_ABBREV1, context="(?s:..)"))
    # Wins only where fewer than two characters follow (the end of the text).
    r.append(_rule(_ABBREV1, _abbrev_with_period_after))
    r.append(_rule([alt + r"\." for alt in _ABBREV4_ALTS]))
    r.append(_rule(_ABBREV4_ALTS, context=_SPACE))
    r.append(_rule(_ACRO_ALTS, context=_SPACENL))
    r.append(_rule(f"{_APOS}[0-9][0-9]", context=_SPACENL))
    r.append(_rule(f"{_LD}+(?:\\.{_LD}+)*\\.{_FILENAME_EXT}", context=f"(?:{_SPACENL}|[.?!,])"))
    r.append(_rule(_WORD + r"\.", _map(_no_soft_hyphen), context=_INSENTP))
    r.append(
        _rule(
            "(?:\\([0-9]{2,3}\\)[ \u00a0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[- \u00a0])?[0-9]{2,4}[- \u00a0])"
            "[0-9]{3,4}[- \u00a0]?[0-9]{3,5}"
            "|(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}",
            _map(lambda t: _parens(t.replace(" ", "\u00a0"))),
        )
    )
    r.append(_rule('"|(?i:&quot;)', _map(lambda t: _latex_quotes(t, True)), context="[A-Za-z0-9$]"))
    r.append(_rule('"|(?i:&quot;)', _map(lambda t: _latex_quotes(t, False))))
    r.append(_rule("\x7f", _drop))
    r.append(_rule("<|(?i:&lt;)", _map(lambda t: "<")))
    r.append(_rule(">|(?i:&gt;)", _map(lambda t: ">")))
    r.append(_rule(r"[<>]?[:;=][-o*']?[()DPdpO\\{@|\[\]]", _map(_parens), context="[^A-Za-z0-9]"))
    r.append(
        _rule(
            [
                r"[\^x=~<>]\.\[\^x=~<>\]",
                r"[-\^x=~<>']_[-\^x=~<>']",
                r"\([-\^x=~<>'][_.]?[-\^x=~<>']\)",
                r"\([\^x=~<>']-[\^x=~<>'`]\)",
            ],
            _map(_parens),
        )
    )
    r.append(_rule(r"\{", _map(lambda t: "-LCB-")))
    r.append(_rule(r"\}", _map(lambda t: "-RCB-")))
    r.append(_rule(r"\[", _map(lambda t: "-LSB-")))
    r.append(_rule(r"\]", _map(lambda t: "-RSB-")))
    r.append(_rule(r"\(", _map(lambda t: "-LRB-")))
    r.append(_rule(r"\)", _map(lambda t: "-RRB-")))
    r.append(_rule(r"-+", _hyphens))
    r.append(_rule([r"\.{3,5}", "(?:\\.[ \u00a0]){2,4}\\.", "[\u0085\u2026]"], _map(lambda t: "...")))
    r.append(_rule([r"@+", r"#+", r"_+"]))
    r.append(_rule([r"\*+", r"(?:\\\*){1,3}"]))
    r.append(_rule(_INSENTP))
    r.append(_rule(r"[?!]+"))
    r.append(_rule("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]"))
    r.append(_rule("="))
    r.append(_rule("/"))
    _hthing = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:(?:{'|'.join(_ACRO2_ALTS)})\\.|[A-Za-z0-9\u00ad]+))+"
    r.append(_rule(_hthing + r"\.", _map(_no_soft_hyphen), context=_INSENTP))
    r.append(_rule(_hthing, _map(_no_soft_hyphen)))
    _jld = f"(?:{_JL}|{_JD})"
    _thing_part = f"(?:[dDoOlL]{_APOSETC}{_jld})?{_jld}+"
    _thing = f"{_thing_part}(?:{_HYPHEN}{_thing_part})*"
    r.append(_rule(_thing + r"\.", context=_INSENTP))
    r.append(_rule(_thing))
    _thinga = r"[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"
    r.append(_rule(_thinga + r"\.", _map(lambda t: _AMP.sub("&", t)), context=_INSENTP))
    r.append(_rule(_thinga, _map(lambda t: _AMP.sub("&", t))))
    r.append(_rule("'", _map(lambda t: _latex_quotes(t, True)), context="[A-Za-z][^ \t\n\r\u00a0]"))
    r.append(_rule(_REDAUX, _map(lambda t: _latex_quotes(t, False))))
    r.append(_rule(_SREDAUX, _map(lambda t: _latex_quotes(t, False))))
    r.append(
        _rule(
            [
                _APOS,
                "''",
                "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a"
                "\u00ab\u00bb]{1,2}",
            ],
            _map(lambda t: _latex_quotes(t, False)),
        )
    )
    r.append(_rule("<<|>>"))
    r.append(_rule(_MISCSYMBOL))
    r.append(_rule("\x00|" + _SPACE + "+|[\u200b\u200e\u200f\ufeff]", _drop))
    r.append(_rule(_NEWLINE, _newline))
    r.append(_rule(r"(?i:&nbsp;)", _drop))
    return r


_RULES = _build_rules()
_ASSIMILATIONS = {"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"}
# A run of ASCII letters followed by a space, a newline or the end, optionally through a final
# "." or ",", is one plain WORD token unless it is an abbreviation, a one-letter acronym or an
# assimilation; no other rule can match longer there. This shortcut covers most caption tokens.
_FAST_RUN = re.compile(r"[A-Za-z]+(?=(?:[.,]?(?:[ \n]|\Z)))")
_ABBREVIATION = re.compile(
    "|".join(
        [_ABBREV1, _ABBREV3, r"(?:(?i:pt)[eyEY]|(?i:co))\."]
        + [alt + r"\." for alt in _ABBREV4_ALTS]
        + [alt + r"\." for alt in _ACRO_ALTS]
    )
)


def _scan(text: str) -> list[str]:
    """Tokenize ``text``; line breaks come back as NEWLINE_TOKEN."""
    tokens: list[str] = []
    pos = 0
    end = len(text)
    rules = _RULES
    while pos < end:
        ch = text[pos]
        if ch == " ":
            pos += 1
            continue
        if ch == "\n":
            tokens.append(NEWLINE_TOKEN)
            pos += 1
            continue
        fast = _FAST_RUN.match(text, pos)
        if fast is not None:
            word = fast.group()
            nxt = text[fast.end()] if fast.end() < end else " "
            if word.lower() not in _ASSIMILATIONS and (
                (nxt != "." and nxt != ",") or (len(word) > 1 and _ABBREVIATION.fullmatch(word + nxt) is None)
            ):
                tokens.append(word)
                pos = fast.end()
                continue
        best_len = 0
        best = None
        for rule in rules:
            for pattern in rule.patterns:
                m = pattern.match(text, pos)
                if m is not None and m.end() - pos > best_len:
                    best_len = m.end() - pos
                    best = (rule, m)
        if best is None:
            # Untokenizable character: the Java tokenizer deletes it (after a warning).
            pos += 1
            continue
        rule, m = best
        token, consumed = rule.action(m.group("m"))
        if token is not None:
            tokens.append(token)
        pos += consumed
    return tokens


def _sigma_passes(c: str) -> bool:
    """Whether Java's final-sigma test looks through ``c`` for a cased letter (measured on JDK 17)."""
    if c in "'\".":
        return True
    if "\u3040" <= c <= "\u30ff" or "\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff":
        return False  # ideographs and kana are words of their own
    return unicodedata.category(c) in _SIGMA_PASS_CATEGORIES


_SIGMA_PASS_CATEGORIES = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Nd", "Nl", "No", "Pd", "Pc", "Cf"}


def _java_lower(token: str) -> str:
    """Lower-case as Java's ``String.toLowerCase(Locale.ENGLISH)`` does.

    Python and Java differ only in choosing between the two small sigmas for a capital sigma:
    Java looks past digits, dashes, apostrophes and a few other characters for a cased letter
    on either side, Python only past case-ignorable ones.
    """
    if "\u03a3" not in token:
        return token.lower()
    out = []
    n = len(token)
    for i, c in enumerate(token):
        if c != "\u03a3":
            out.append(c.lower())
            continue
        cased_before = cased_after = False
        j = i - 1
        while j >= 0 and _sigma_passes(token[j]):
            if token[j].isupper() or token[j].islower():
                cased_before = True
                break
            j -= 1
        k = i + 1
        while k < n and _sigma_passes(token[k]):
            if token[k].isupper() or token[k].islower():
                cased_after = True
                break
            k += 1
        out.append("\u03c2" if cased_before and not cased_after else "\u03c3")
    return "".join(out)


def ptb_tokenize_lines(lines: Sequence[str]) -> list[str]:
    """Tokenize captions as ``PTBTokenizer -preserveLines -lowerCase`` does, one output line per input.

    ``lines`` must not contain line breaks. The captions are scanned as one text joined by
    newlines, exactly as the toolkit feeds them to Java, because a few rules look across a line
    break (an abbreviation at the end of a caption reads the start of the next one). Returns the
    tokens of each line joined by single spaces, lower-cased, punctuation not yet removed.
    """
    text = "\n".join(lines)
    out: list[str] = []
    current: list[str] = []
    for token in _scan(text):
        if token == NEWLINE_TOKEN:
            out.append(" ".join(current))
            current = []
        else:
            current.append(_java_lower(token))
    out.append(" ".join(current))
    if len(out) != len(lines):
        raise RuntimeError(f"tokenizer produced {len(out)} lines for {len(lines)} captions")
    return out

