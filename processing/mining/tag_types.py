"""The three tag categories of Tag2Text."""

from __future__ import annotations

OBJECT = "object"  # objects and scenes: head nouns ("dog", "fire hydrant", "kitchen")
ACTION = "action"  # verbs, in lemma form, with a particle or preposition when phrasal ("ride", "sit on")
ATTRIBUTE = "attribute"  # adjective and colour modifiers ("wooden", "red")

# The official Tag2Text list stores its 3,429 tags in this order: 3,012 objects/scenes, then
# 240 actions, then 177 attributes. Lists written by build_tag_list follow the same order.
TAG_TYPES: tuple[str, ...] = (OBJECT, ACTION, ATTRIBUTE)


def check_tag_type(value, what: str = "tag type") -> str:
    if value not in TAG_TYPES:
        raise ValueError(f"{what} must be one of {list(TAG_TYPES)}, got {value!r}")
    return value
