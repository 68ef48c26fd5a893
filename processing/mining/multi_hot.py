"""Tag indices to multi-hot label vectors for the tagging loss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _is_id(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def tag_ids_to_multi_hot(tag_ids, num_tags: int, *, return_tensors: str = "np", dtype=None):
    """Turn tag indices into a multi-hot vector (or a batch of them).

    Args:
        tag_ids: indices of one caption (``[3, 17]``) or of a batch (``[[3, 17], [], [5]]``).
            Repeated indices are fine.
        num_tags: the length of the tag list.
        return_tensors: ``"np"`` for a NumPy array, ``"pt"`` for a torch tensor.
        dtype: element type; default float32 (what ``BCEWithLogits``-style losses take).

    Returns:
        Shape ``(num_tags,)`` for one caption, ``(batch, num_tags)`` for a batch.

    Raises:
        ValueError: an index outside ``[0, num_tags)``, a non-integer index, or a bad ``num_tags``.
    """
    if not _is_id(num_tags) or num_tags <= 0:
        raise ValueError(f"num_tags must be a positive integer, got {num_tags!r}")
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be 'np' or 'pt', got {return_tensors!r}")
    if isinstance(tag_ids, np.ndarray):
        tag_ids = tag_ids.tolist()
    if not isinstance(tag_ids, Sequence) or isinstance(tag_ids, (str, bytes)):
        raise ValueError(f"tag_ids must be a list of indices or a list of lists of indices, got {type(tag_ids).__name__}")

    batched = any(not _is_id(x) and isinstance(x, (Sequence, np.ndarray)) and not isinstance(x, (str, bytes)) for x in tag_ids)
    if batched and any(_is_id(x) for x in tag_ids):
        raise ValueError("tag_ids mixes indices and lists of indices; pass one list per caption")
    rows = [list(x) if not isinstance(x, np.ndarray) else x.tolist() for x in tag_ids] if batched else [list(tag_ids)]
    out = np.zeros((len(rows), num_tags), dtype=np.float32 if dtype is None or return_tensors == "pt" else dtype)
    for r, row in enumerate(rows):
        for value in row:
            if not _is_id(value):
                raise ValueError(f"tag_ids[{r}] holds {value!r}; tag indices must be integers")
            if not 0 <= value < num_tags:
                raise ValueError(f"tag index {value} in tag_ids[{r}] is outside the tag list (0..{num_tags - 1})")
            out[r, value] = 1
    if not batched:
        out = out[0]
    if return_tensors == "pt":
        import torch

        tensor = torch.from_numpy(out)
        return tensor if dtype is None else tensor.to(dtype)
    return out
