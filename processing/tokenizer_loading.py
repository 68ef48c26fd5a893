"""Loading the BERT WordPiece tokenizer of Tag2Text from a file, a directory or a Hub id, checked to be usable.

Tooling beside the processor, not part of the Hub payload: it reads files and names command-line options in its
errors (a remote-code user loads the tokenizer saved with the processor instead).
"""

from __future__ import annotations

import os

from transformers import BertTokenizer

from ..processing_tag2text import add_tag2text_tokens


def build_tokenizer(name_or_path: str | os.PathLike = "bert-base-uncased", *, option: str = "--tokenizer",
                    probe_words=None, **kwargs):
    """A lower-casing BERT WordPiece tokenizer with ``[DEC]``/``[ENC]`` added, checked to be usable.

    Args:
        name_or_path: a ``vocab.txt`` file, a directory holding ``vocab.txt`` or saved tokenizer files, or a
            Hub id (``bert-base-uncased``, as the original used). ``~`` is expanded; a local-looking path that
            does not exist fails at once instead of going to the Hub.
        option: the command-line option that chose the source, named in errors.
        probe_words: words the tokenizer must spell with some token other than ``[UNK]``. Default: "a", "dog"
            and "red" for a Hub id or saved tokenizer files, "a" for a vocab.txt (it may be written for one's
            own captions).

    Raises:
        TokenizerLoadError: (a ``ValueError``) the source is missing, or gave a vocabulary of special tokens
            only (what transformers returns for a Hub id it cannot download) or one that spells a probe word
            as ``[UNK]``; the message names the source and ``option``.
    """
    from .source_check import (
        GENERAL_PROBE_WORDS,
        VOCABULARY_FILE_PROBE_WORDS,
        TokenizerLoadError,
        check_tokenizer,
        missing_local_source,
    )

    source = os.fspath(name_or_path)
    path = os.path.expanduser(source)
    missing = missing_local_source(source, allow_bare_name=True)
    if missing is not None:
        raise TokenizerLoadError(f"{option}: no tokenizer file or directory at {missing}")
    vocabulary_file = None
    if os.path.isfile(path):
        vocabulary_file = path
    elif os.path.isdir(path) and not any(
        os.path.exists(os.path.join(path, name)) for name in ("tokenizer.json", "tokenizer_config.json")
    ):
        vocabulary_file = os.path.join(path, "vocab.txt")
        if not os.path.isfile(vocabulary_file):
            raise TokenizerLoadError(
                f"{option}: tokenizer directory {path} holds neither vocab.txt nor tokenizer files")
    try:
        if vocabulary_file is not None:
            tokenizer = BertTokenizer(vocab=vocabulary_file, do_lower_case=True, **kwargs)
        else:
            tokenizer = BertTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise TokenizerLoadError(
            f"{option}: could not load {source!r} ({error}); pass a directory holding vocab.txt, or the file"
        ) from error
    if probe_words is None:
        probe_words = VOCABULARY_FILE_PROBE_WORDS if vocabulary_file is not None else GENERAL_PROBE_WORDS
    check_tokenizer(tokenizer, source, option=option, probe_words=probe_words)
    return add_tag2text_tokens(tokenizer)
