"""Loading a CLIP text tower (transformers' ``CLIPTextModelWithProjection`` with its tokenizer): what RAM and RAM++
embed tag names and descriptions with (``tag2text open-set``, and new tags of ``tag2text train --init-from``).

A source is a directory or a Hub repo id (offline: looked up in the Hugging Face cache). Imports transformers only
when called.
"""

from __future__ import annotations

import os

from .source_check import looks_like_hub_id

# A CLIP BPE vocabulary holds tens of thousands of entries; a tokenizer with fewer than this is not one (offline,
# transformers may hand back a near-empty tokenizer instead of raising).
_MIN_VOCABULARY = 100


class ClipLoadError(ValueError):
    """The CLIP source is missing or is not a CLIP text model with a tokenizer; the message names it."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_clip_text_tower(source: str, option: str = "--clip-model"):
    """``(CLIPTextModelWithProjection in eval mode, tokenizer)`` of a directory or Hub repo id.

    Raises:
        ClipLoadError: naming ``option`` and ``source``: no such directory, a file, or nothing loadable there.
    """
    path = os.path.expanduser(os.fspath(source))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ClipLoadError(f"{option} {source}: is a file, not a CLIP model directory")
        where = path
    elif looks_like_hub_id(source):
        where = source
    else:
        raise ClipLoadError(f"{option} {source}: no CLIP directory at {path}")
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    try:
        model = CLIPTextModelWithProjection.from_pretrained(where)
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, KeyError) as error:
        raise ClipLoadError(f"{option} {source}: could not load a CLIP text model and tokenizer "
                            f"({_first_line(error)})") from error
    if len(tokenizer) < _MIN_VOCABULARY:
        raise ClipLoadError(f"{option} {source}: its tokenizer has only {len(tokenizer)} tokens, not a CLIP "
                            "vocabulary (offline, a Hub id that is not in the cache loads this way)")
    return model.eval(), tokenizer
