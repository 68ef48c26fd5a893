"""PTB tokenisation of captions, as the COCO caption toolkit does it before scoring.

The toolkit (pycocoevalcap) runs Stanford's Java ``PTBTokenizer`` over all captions, one per
line, lower-cases them and drops punctuation tokens. Scores move noticeably with the tokeniser
(a naive one shifts per-image CIDEr by up to 0.4), so this module runs the very same jar where
Java exists and otherwise uses :mod:`.caption_tokenizer`, this project's own Python tokenizer,
written from the observed output of the jar (identical to it on the COCO val2017 and MAGIC
captions; see ``benchmarks/metrics.py``).

The jar is called directly rather than through ``pycocoevalcap.tokenizer.PTBTokenizer`` because
that wrapper writes its temporary file into the installed package directory (which fails on a
read-only install) and only replaces ``\\n``: any other line break in a caption (``\\r``,
U+2028, ...) makes Java emit an extra line and silently shifts every later caption onto the
wrong image. Here such characters are turned into spaces first and the line count is checked.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Sequence

from .caption_tokenizer import tokenize_lines

logger = logging.getLogger(__name__)

__all__ = [
    "PUNCTUATIONS",
    "TOKENIZER_BACKENDS",
    "java_available",
    "resolve_backend",
    "tokenize_caption_batches",
    "tokenize_captions",
]

# The tokens pycocoevalcap removes after tokenising. The bracket names are listed in upper case
# while the tokenizer's output is lower-cased, so "-lrb-", "-rrb-" etc. survive as words: that is
# the toolkit's behaviour and is reproduced on purpose.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

TOKENIZER_BACKENDS = ("auto", "java", "python")

# Characters the Java lexer treats as a line break (U+0085 is not one: it reads it as an ellipsis).
_LINE_BREAKS = re.compile("\r\n|[\r\n\u2028\u2029\x0b\x0c]")
_JAR_NAME = "stanford-corenlp-3.4.1.jar"


@functools.lru_cache(maxsize=1)
def _jar_path() -> Path | None:
    try:
        jar = resources.files("pycocoevalcap.tokenizer") / _JAR_NAME
    except ModuleNotFoundError:
        return None
    path = Path(str(jar))
    return path if path.is_file() else None


def java_available() -> bool:
    """True when a ``java`` executable is on PATH (the toolkit's tokenizer and METEOR need it)."""
    return shutil.which("java") is not None


def resolve_backend(backend: str) -> str:
    """Map ``"auto"`` to ``"java"`` when Java and the toolkit's jar are present, else ``"python"``."""
    if backend not in TOKENIZER_BACKENDS:
        raise ValueError(f"tokenizer must be one of {TOKENIZER_BACKENDS}, got {backend!r}")
    if backend == "python":
        return "python"
    usable = java_available() and _jar_path() is not None
    if backend == "java":
        if not usable:
            raise RuntimeError(
                "tokenizer='java' needs a `java` executable on PATH and pycocoevalcap's "
                f"{_JAR_NAME}; use tokenizer='python' or 'auto'"
            )
        return "java"
    if not usable:
        logger.info("Java or pycocoevalcap's PTB tokenizer jar not found; using the Python PTB tokenizer")
        return "python"
    return "java"


def _clean(caption: str) -> str:
    if not isinstance(caption, str):
        raise TypeError(f"captions must be strings, got {type(caption).__name__}: {caption!r}")
    return _LINE_BREAKS.sub(" ", caption)


def _strip_punctuation(line: str) -> str:
    # Same token filter as pycocoevalcap: split on single spaces, drop punctuation tokens. Tokens
    # holding a non-breaking space (fractions, phone numbers) stay whole here, as in the toolkit.
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def _run_java(lines: list[str]) -> list[str]:
    cmd = [
        "java",
        # A run lasts about a second: the quick C1 compiler alone starts ~40% faster, same output.
        "-XX:+IgnoreUnrecognizedVMOptions",
        "-XX:TieredStopAtLevel=1",
        "-cp",
        str(_jar_path()),
        "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines",
        "-lowerCase",
    ]
    # No trailing newline, exactly like the toolkit's input file: the lexer's abbreviation rules
    # look at what follows the last caption.
    data = "\n".join(lines).encode("utf-8", errors="replace")
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    out, err = proc.stdout, proc.stderr
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-2000:]
        raise RuntimeError(f"Java PTBTokenizer failed (exit {proc.returncode}): {tail}")
    result = out.decode("utf-8").split("\n")
    if len(result) != len(lines):
        raise RuntimeError(f"Java PTBTokenizer returned {len(result)} lines for {len(lines)} captions")
    return result


def tokenize_caption_batches(batches: Sequence[Sequence[str]], backend: str = "auto") -> list[list[str]]:
    """Tokenise several independent batches of captions (e.g. references and predictions).

    Each batch is tokenised as one stream, in order, exactly as the toolkit tokenises its ``gts``
    and ``res`` dictionaries; order matters because the lexer reads a little past the end of a
    caption. With Java, the batches run as parallel JVMs. Returns, per batch, the lower-cased
    tokens of each caption joined by single spaces, punctuation removed.
    """
    backend = resolve_backend(backend)
    cleaned = [[_clean(c) for c in batch] for batch in batches]
    if backend == "java":
        # One JVM per batch, in parallel: the JVM start dominates for caption-sized inputs.
        with ThreadPoolExecutor(max_workers=max(1, len(cleaned))) as pool:
            raw = list(pool.map(lambda lines: _run_java(lines) if lines else [], cleaned))
    else:
        raw = [tokenize_lines(lines) if lines else [] for lines in cleaned]
    return [[_strip_punctuation(line) for line in lines] for lines in raw]


def tokenize_captions(captions: Sequence[str], backend: str = "auto") -> list[str]:
    """Tokenise one batch of captions; see :func:`tokenize_caption_batches`."""
    return tokenize_caption_batches([captions], backend)[0]
