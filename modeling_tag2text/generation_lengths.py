"""How long a caption may be: the one rule that turns a model's decoding defaults and a caller's length
arguments into total lengths, for every backend (``Tag2TextForCaptioning.generate``, the original beam search,
the ONNX runtime, the CLI).

Pure Python, no imports: part of the Hub payload and of the ONNX runtime (which imports neither torch nor
transformers).
"""

from __future__ import annotations

# transformers' GenerationConfig.max_length default; as there, it counts new tokens when nothing else is set.
TRANSFORMERS_DEFAULT_MAX_LENGTH = 20
# The length arguments of generate, in generation_lengths' order.
LENGTH_ARGUMENTS = ("max_new_tokens", "min_new_tokens", "max_length", "min_length")


def _setting(defaults, name):
    """A field of a GenerationConfig, or a key of generation_config.json read as a dict."""
    if isinstance(defaults, dict):
        return defaults.get(name)
    return getattr(defaults, name, None)


def generation_lengths(prompt_length: int, defaults=None, max_new_tokens=None, min_new_tokens=None, max_length=None,
                       min_length=None) -> tuple[int, int]:
    """(maximum, minimum) total length, prompt included, of a generated sequence.

    Args:
        prompt_length: tokens the decoder starts from (``[DEC]`` and the prompt; the padded width of a batch).
        defaults: the model's generation config (a ``GenerationConfig`` or the dict of generation_config.json):
            its ``max_new_tokens``/``min_new_tokens`` (26 and 6 after the released 4-token prompt, see
            ``generation_defaults``) or else its ``max_length``/``min_length``.
        max_new_tokens / min_new_tokens / max_length / min_length: the caller's, as transformers' ``generate``
            takes them (``*_length`` count the prompt, ``*_new_tokens`` do not).

    The rules: a caller's value wins over a default; a caller's ``max_length`` (``min_length``) replaces the
    default new-token count instead of being overridden by it (transformers would prefer the default
    ``max_new_tokens``); a caller's ``max_new_tokens`` below the default minimum lowers that minimum, so that a
    short caption may end early; with no count anywhere the maximum is transformers' default, 20 new tokens.
    The minimum may exceed the maximum (a caller's ``max_length`` below the default minimum): generation stops
    at the maximum either way.
    """
    prompt_length = int(prompt_length)
    callers_max_new_tokens = max_new_tokens
    if max_new_tokens is None and max_length is None:
        max_new_tokens = _setting(defaults, "max_new_tokens")
        if max_new_tokens is None:
            max_length = _setting(defaults, "max_length")
            if max_length is None or max_length == TRANSFORMERS_DEFAULT_MAX_LENGTH:
                max_length, max_new_tokens = None, TRANSFORMERS_DEFAULT_MAX_LENGTH
    maximum = prompt_length + int(max_new_tokens) if max_new_tokens is not None else int(max_length)
    if min_new_tokens is None and min_length is None:
        min_new_tokens = _setting(defaults, "min_new_tokens")
        if min_new_tokens is not None and callers_max_new_tokens is not None:
            min_new_tokens = min(min_new_tokens, callers_max_new_tokens)
        if min_new_tokens is None:
            min_length = _setting(defaults, "min_length") or 0
    minimum = prompt_length + int(min_new_tokens) if min_new_tokens is not None else int(min_length)
    return maximum, minimum
