"""A faster drop-in for spaCy's ``attribute_ruler`` on the English pipelines.

The attribute ruler of ``en_core_web_sm`` maps fine-grained tags to coarse POS and
morphology with 179 rules, run through spaCy's general ``Matcher``; on short captions that
costs about a fifth of the whole pipeline. Its rules only use fixed-length token patterns over
TAG, LOWER, DEP and IS_SPACE (plain values, ``IN``/``NOT_IN`` lists, ``REGEX``), so they can be matched
with dictionary look-ups instead. The result is identical: the same rules, applied in the
same order (by rule number, then position) with spaCy's own attribute setter.

:func:`compile_attribute_ruler` returns ``None`` for a ruler using anything else (operators,
other attributes), and the caller then keeps spaCy's component.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

_SUPPORTED_KEYS = ("TAG", "LOWER", "DEP", "IS_SPACE")
# Token fields are read once per token into a tuple in this order.
_FIELD = {key: position for position, key in enumerate(_SUPPORTED_KEYS)}
# Most selective first: a pattern is filed under the first of these it constrains by value.
_INDEX_ORDER = ("LOWER", "TAG", "DEP", "IS_SPACE")


def _compile_value(value):
    """A predicate on one attribute value, or None if the value form is not supported."""
    if isinstance(value, (str, bool)):
        return lambda v, expected=value: v == expected
    if isinstance(value, dict) and len(value) == 1:
        ((op, arg),) = value.items()
        if op == "IN" and isinstance(arg, (list, tuple)):
            allowed = frozenset(arg)
            return lambda v: v in allowed
        if op == "NOT_IN" and isinstance(arg, (list, tuple)):
            excluded = frozenset(arg)
            return lambda v: v not in excluded
        if op == "REGEX" and isinstance(arg, str):
            pattern = re.compile(arg)
            return lambda v: pattern.search(v) is not None
    return None


def _compile_token(spec: dict):
    if not isinstance(spec, dict) or not spec or not set(spec) <= set(_SUPPORTED_KEYS):
        return None
    checks = []
    for key, value in spec.items():
        predicate = _compile_value(value)
        if predicate is None:
            return None
        checks.append((_FIELD[key], predicate))
    return tuple(checks)


def _index_keys(spec: dict):
    """(field, values) under which a pattern starting with ``spec`` is filed, or None."""
    for key in _INDEX_ORDER:
        value = spec.get(key)
        if isinstance(value, (str, bool)):
            return _FIELD[key], [value]
        if isinstance(value, dict) and isinstance(value.get("IN"), (list, tuple)):
            return _FIELD[key], list(value["IN"])
    return None


class FastAttributeRuler:
    """Callable applying a compiled attribute ruler to a ``Doc`` in place."""

    def __init__(self, rules, index, unindexed):
        self._rules = rules  # rule id -> (token checks per pattern and position, target index, attrs)
        self._index = index  # per field: value -> ((rule id, pattern index), ...)
        self._unindexed = unindexed
        from spacy.tokens._retokenize import set_token_attrs

        self._set_token_attrs = set_token_attrs

    def __call__(self, doc):
        rules = self._rules
        index = self._index
        fields = [(t.tag_, t.lower_, t.dep_, t.is_space) for t in doc]
        n = len(fields)
        matches = []
        for start, values in enumerate(fields):
            candidates = self._unindexed
            for position, table in index:
                found = table.get(values[position])
                if found:
                    candidates = candidates + found
            for rule_id, pattern_index in candidates:
                checks = rules[rule_id][0][pattern_index]
                if start + len(checks) > n:
                    continue
                for offset, token_checks in enumerate(checks):
                    other = fields[start + offset]
                    if not all(predicate(other[field]) for field, predicate in token_checks):
                        break
                else:
                    matches.append((rule_id, start, len(checks)))
        # spaCy applies matches sorted by rule id then span, so later rules win; a rule with
        # several patterns matching the same span sets the same attributes twice, harmlessly.
        matches.sort()
        for rule_id, start, length in matches:
            _, target, attrs = rules[rule_id]
            self._set_token_attrs(doc[start + (target if target >= 0 else length + target)], attrs)
        return doc


def compile_attribute_ruler(ruler) -> FastAttributeRuler | None:
    """Compile a spaCy ``AttributeRuler``; ``None`` when its patterns use unsupported features."""
    rules = []
    tables: dict[int, dict] = {}
    unindexed = []
    for rule_id in range(len(ruler.attrs)):
        patterns = ruler.matcher.get(str(rule_id))[1]
        compiled = []
        for pattern_index, pattern in enumerate(patterns):
            token_checks = [_compile_token(spec) for spec in pattern]
            if not pattern or any(c is None for c in token_checks):
                logger.debug("attribute ruler rule %d uses unsupported pattern features: %r", rule_id, pattern)
                return None
            compiled.append(tuple(token_checks))
            keys = _index_keys(pattern[0])
            if keys is None:
                unindexed.append((rule_id, pattern_index))
                continue
            field, values = keys
            table = tables.setdefault(field, {})
            for value in values:
                table[value] = table.get(value, ()) + ((rule_id, pattern_index),)
        rules.append((tuple(compiled), ruler.indices[rule_id], ruler.attrs[rule_id]))
    index = tuple(sorted(tables.items()))
    return FastAttributeRuler(rules, index, tuple(unindexed))
