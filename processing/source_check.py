"""Where a tokenizer or model comes from, and whether a loaded tokenizer can spell words.

Two conventions, owned here:

- a source is *local-looking* when it cannot be a Hub repo id: it starts with ``.``, ``/`` or ``~``, holds a
  backslash or more than one ``/``, or has characters a repo id cannot have. Such a source that does not exist
  is reported at once as missing instead of being sent to the Hub (where it would be retried, then fail with
  a message about repo-id syntax). ``owner/name`` is always a repo id shape; a bare ``name`` is one only where
  the caller allows it (``bert-base-uncased``; Tag2Text models on the Hub are always ``owner/name``).
- a tokenizer is *usable* when its vocabulary holds more than its special tokens and it spells each probe word
  with at least one token other than ``[UNK]``. transformers 5 does not raise when a Hub tokenizer cannot be
  downloaded: offline, ``BertTokenizer.from_pretrained("bert-base-uncased")`` returns a 5-token vocabulary that
  maps every word to ``[UNK]``; a model trained with it learns to write ``[UNK]``.

Standard library only (the hub commands import it before anything heavy).
"""

from __future__ import annotations

import os
import re

# Probe words of a general-purpose tokenizer (a Hub id or a saved tokenizer directory).
GENERAL_PROBE_WORDS = ("a", "dog", "red")
# A vocab.txt may be written for one's own captions (no "dog" in them); "a" is in every English caption set.
VOCABULARY_FILE_PROBE_WORDS = ("a",)

_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


class TokenizerLoadError(ValueError):
    """A tokenizer source gave no usable vocabulary; the message names the source and the option to use."""


def looks_like_hub_id(source: str, allow_bare_name: bool = False) -> bool:
    """Whether ``source`` has the shape of a Hub repo id (``owner/name``, or ``name`` if allowed)."""
    text = os.fspath(source)
    if not text or text[0] in "./~" or "\\" in text or text.endswith("/"):
        return False
    parts = text.split("/")
    if len(parts) == 1 and not allow_bare_name:
        return False
    if len(parts) > 2:
        return False
    return all(_REPO_PART.match(part) and ".." not in part and "--" not in part for part in parts)


def missing_local_source(source: str, allow_bare_name: bool = False) -> str | None:
    """The expanded path when ``source`` does not exist and cannot be a Hub id (so it is a missing local
    path); None when it exists or may be a repo id."""
    text = os.fspath(source)
    path = os.path.expanduser(text)
    if os.path.exists(path):
        return None
    if looks_like_hub_id(text, allow_bare_name=allow_bare_name):
        return None
    return path


def ordinary_vocabulary_size(tokenizer) -> int:
    """Vocabulary entries that are neither special tokens nor BERT's ``[unusedN]`` placeholders."""
    special = set(tokenizer.all_special_tokens)
    return sum(1 for token in tokenizer.get_vocab() if token not in special and not token.startswith("[unused"))


def words_spelled_unknown(tokenizer, words) -> list[str]:
    """The words that ``tokenizer`` spells with ``[UNK]`` only."""
    unknown = tokenizer.unk_token_id
    found = []
    for word in words:
        ids = tokenizer.encode(word, add_special_tokens=False)
        if not ids or all(token == unknown for token in ids):
            found.append(word)
    return found


def check_tokenizer(tokenizer, source, option: str = "--tokenizer", probe_words=GENERAL_PROBE_WORDS) -> None:
    """Raise :class:`TokenizerLoadError` unless ``tokenizer`` is usable (see the module docstring).

    Args:
        source: what the tokenizer was loaded from, named in the message.
        option: the command-line option that chooses the tokenizer, named in the message.
        probe_words: words that must not come out as ``[UNK]`` only.
    """
    source = os.fspath(source)
    size = len(tokenizer)
    if ordinary_vocabulary_size(tokenizer) == 0:
        raise TokenizerLoadError(
            f"{option}: could not load {source!r} (offline? got a {size}-token vocabulary of special tokens only); "
            f"pass a directory holding its vocab.txt, or the vocab.txt file, with {option}"
        )
    unknown = words_spelled_unknown(tokenizer, probe_words)
    if unknown:
        raise TokenizerLoadError(
            f"{option}: the tokenizer from {source!r} ({size} tokens) spells {', '.join(map(repr, unknown))} as "
            f"[UNK] only; pass a directory or vocab.txt with a real vocabulary with {option}"
        )
