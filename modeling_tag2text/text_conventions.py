"""The text conventions of Tag2Text, in one place: every token sequence the model reads is built here.

The released model (BLIP's ``med.py`` lineage) reads four kinds of text, all WordPiece BERT with two added tokens:

- caption (decoder input): ``[DEC] a picture of <caption> [SEP]``; ``[DEC]`` takes the place of ``[CLS]`` and the
  prompt is prepended unless the caption already starts with it; the LM loss skips ``[DEC]`` and the prompt;
- alignment text (ITC, text-only encoder): ``[CLS] <caption> [SEP]``, no prompt;
- matching text (ITM, encoder with cross-attention): ``[ENC] <caption> [SEP]``, no prompt;
- tag text (interaction encoder): ``[ENC] tag1 | tag2 ... [SEP]``, names joined with ``" | "`` in class-index
  order, truncated and padded to ``max_tag_length`` (the decoder attends to every position, padding included).

The processor builds all of them through these functions, and the model builds the tag text of *predicted* tags
with :func:`tag_token_sequences` from the token ids its config records (:func:`vocabulary_token_ids`). Because
WordPiece splits on whitespace and punctuation, the ids of ``" | ".join(names)`` are the concatenation of each
name's ids and the separator's, so one id-level builder serves both.

Pure Python, no imports beyond the standard library: it is part of the Hub payloads of the config, the model and
the processor (a single-dot sibling of each).
"""

from __future__ import annotations

DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"
TAG_SEPARATOR = " | "
PROMPT = "a picture of "
IGNORE_INDEX = -100


# -- tokenizer --------------------------------------------------------------------------------------------------


def add_special_tokens(tokenizer):
    """Add ``[DEC]`` as the bos token and ``[ENC]`` as an extra special token, as the original does."""
    if tokenizer.convert_tokens_to_ids(DEC_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    else:
        tokenizer.bos_token = DEC_TOKEN
    if tokenizer.convert_tokens_to_ids(ENC_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    return tokenizer


def special_token_ids(tokenizer) -> dict:
    """The text config's special-token ids of a tokenizer: ``[DEC]`` is the bos, ``[SEP]`` ends a caption."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "bos_token_id": tokenizer.convert_tokens_to_ids(DEC_TOKEN),
        "enc_token_id": tokenizer.convert_tokens_to_ids(ENC_TOKEN),
    }


def piece_ids(tokenizer, texts) -> list:
    """WordPiece ids of each text, without special tokens."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def vocabulary_token_ids(tokenizer, tag_names, prompt: str = PROMPT, tag_separator: str = TAG_SEPARATOR) -> dict:
    """What a model needs to turn predicted tags into text and to start a caption, without a tokenizer:
    each tag name's ids, the separator's, the prompt's and the special-token ids."""
    return {
        "tag_token_ids": piece_ids(tokenizer, tag_names),
        "tag_separator_token_ids": piece_ids(tokenizer, [tag_separator])[0],
        "prompt_token_ids": piece_ids(tokenizer, [prompt])[0],
        "special_token_ids": special_token_ids(tokenizer),
    }


# -- strings ----------------------------------------------------------------------------------------------------


def tag_text(tags, separator: str = TAG_SEPARATOR) -> str:
    """One image's tags as text: a list of names joined with the separator (blank names dropped), or a string
    that is already joined."""
    if isinstance(tags, str):
        return tags
    return separator.join(str(t).strip() for t in tags if str(t).strip())


def split_tag_text(text: str, separator: str = TAG_SEPARATOR) -> list:
    """The names of a joined tag text (inverse of :func:`tag_text`)."""
    mark = separator.strip()
    names = text.split(mark) if mark else text.split()
    return [name.strip() for name in names if name.strip()]


def tag_names_per_image(tags, batch_size: int, separator: str = TAG_SEPARATOR) -> list:
    """User tags as a list of names per image: the one reading of every form a caller may give.

    Accepts one separator-joined string (one image), a list with one entry per image (each a joined string or a
    list of names), or, for a single image, a flat list of names. Blank names are dropped. Raises ValueError when
    the entries do not match ``batch_size`` and TypeError for an entry that is neither a string nor a list.
    """
    if isinstance(tags, str):
        tags = [tags]
    tags = list(tags)
    if batch_size == 1 and len(tags) > 1 and all(isinstance(t, str) for t in tags):
        tags = [tags]
    if len(tags) != batch_size:
        raise ValueError(f"tags has {len(tags)} entries but there are {batch_size} images")
    names_per_image = []
    for item in tags:
        if isinstance(item, str):
            names_per_image.append(split_tag_text(item, separator))
        elif isinstance(item, (list, tuple)):
            names_per_image.append([str(n).strip() for n in item if str(n).strip()])
        else:
            raise TypeError(f"each image's tags must be a string or a list of strings, got {type(item).__name__}")
    return names_per_image


def caption_text(text, prompt: str = PROMPT, add_prompt: bool = True) -> str:
    """The caption the decoder reads: the prompt, then the caption (unless it already starts with the prompt)."""
    text = "" if text is None else str(text)
    if not add_prompt:
        return text
    if text.strip().lower().startswith(prompt.strip().lower()):
        return text.strip()
    return prompt + text.strip()


def strip_prompt(text: str, prompt: str = PROMPT) -> str:
    """A generated caption without the prompt."""
    mark = prompt.strip().lower()
    stripped = text.strip()
    if mark and stripped.lower().startswith(mark):
        stripped = stripped[len(mark):]
    return stripped.strip()


# -- token sequences --------------------------------------------------------------------------------------------


def with_first_token(rows, token_id: int, masks=None) -> list:
    """Rows of ids with the first real token (the tokenizer's ``[CLS]``; after any left padding when ``masks``
    are given) replaced: ``[DEC]`` for captions, ``[ENC]`` for tag and matching text, ``[CLS]`` for alignment
    text."""
    result = []
    for index, row in enumerate(rows):
        row = [int(t) for t in row]
        first = 0
        if masks is not None:
            first = next((i for i, m in enumerate(masks[index]) if m), 0)
        if row:
            row[first] = int(token_id)
        result.append(row)
    return result


def tag_token_sequences(pieces_per_image, separator_ids, enc_token_id: int, sep_token_id: int, pad_token_id: int,
                        max_length: int):
    """Tag text ids and masks, ``[ENC] t1 | t2 ... [SEP]`` padded to ``max_length``, from each name's ids.

    As the original tokenizes ``" | ".join(names)`` with ``truncation=True, max_length=40``: the text is cut to
    ``max_length - 2`` tokens, then ``[SEP]`` ends it. Returns (ids, masks) as lists of lists.
    """
    if max_length < 3:
        raise ValueError(f"max_length must leave room for [ENC], a token and [SEP], got {max_length}")
    rows, masks = [], []
    for pieces in pieces_per_image:
        tokens = []
        for position, ids in enumerate(pieces):
            if position:
                tokens.extend(separator_ids)
            tokens.extend(ids)
        tokens = [int(enc_token_id)] + [int(t) for t in tokens[: max_length - 2]] + [int(sep_token_id)]
        masks.append([1] * len(tokens) + [0] * (max_length - len(tokens)))
        rows.append(tokens + [int(pad_token_id)] * (max_length - len(tokens)))
    return rows, masks


def caption_labels(rows, masks, prompt_length: int) -> list:
    """LM labels of caption ids: -100 on padding and on the first ``prompt_length`` real tokens (``[DEC]`` and
    the prompt, or only ``[DEC]`` without a prompt), so the loss covers the caption and its final ``[SEP]``."""
    labels = []
    for row, mask in zip(rows, masks):
        label, seen = [], 0
        for token, real in zip(row, mask):
            supervised = bool(real) and seen >= prompt_length
            seen += bool(real)
            label.append(int(token) if supervised else IGNORE_INDEX)
        labels.append(label)
    return labels


def decoder_prompt_ids(bos_token_id: int, prompt_token_ids) -> list:
    """The ids a caption starts from: ``[DEC]`` and the prompt's ids."""
    return [int(bos_token_id)] + [int(t) for t in prompt_token_ids]


def trim_prompt_row(tokens, bos_token_id: int, end_token_ids) -> list:
    """A prompt row as generation continues it: trailing ``[SEP]``/``[PAD]`` removed (the processor ends training
    captions with them), ``[DEC]`` first."""
    tokens = list(tokens)
    while tokens and tokens[-1] in end_token_ids:
        tokens.pop()
    if not tokens or tokens[0] != bos_token_id:
        tokens = [bos_token_id] + tokens
    return tokens
