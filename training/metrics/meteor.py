"""METEOR through the COCO caption toolkit's own Java program (pycocoevalcap's METEOR 1.5 jar).

METEOR needs its paraphrase tables and WordNet-style stemming, so it is not reimplemented: the
toolkit's wrapper is called as is. A call costs about 15 s, mostly JVM start and table loading.
Without Java the score is reported as unavailable (``None``) rather than approximated.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from .tokenization import java_available

logger = logging.getLogger(__name__)

__all__ = ["meteor_scores"]


def meteor_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """Corpus and per-image METEOR of tokenised ``hypotheses`` against ``references``.

    The corpus score is METEOR's own aggregate over all images (not the mean of per-image
    scores), as in the toolkit. Raises ``RuntimeError`` when Java is missing or the jar fails.
    """
    if not java_available():
        raise RuntimeError("METEOR needs a `java` executable on PATH (pycocoevalcap runs METEOR 1.5 in Java)")
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError as exc:
        raise ImportError("METEOR needs pycocoevalcap: pip install 'tag2text[metrics]'") from exc

    # The wrapper joins references with " ||| " on a single stdin line; those characters inside a
    # caption would corrupt the protocol, so they are removed (the wrapper already does this for
    # the hypothesis). Keys are positions, which keeps the toolkit's image order.
    gts = {i: [r.replace("|||", "").replace("\n", " ") for r in refs] for i, refs in enumerate(references)}
    res = {i: [h.replace("\n", " ")] for i, h in enumerate(hypotheses)}
    scorer = Meteor()
    try:
        score, scores = scorer.compute_score(gts, res)
    except (ValueError, BrokenPipeError, OSError) as exc:
        err = b""
        try:
            scorer.meteor_p.kill()
            err = scorer.meteor_p.stderr.read() or b""
        except OSError:
            pass
        raise RuntimeError(f"METEOR (Java) failed: {exc}; stderr: {err.decode(errors='replace')[-2000:]}") from exc
    finally:
        # The wrapper's __del__ takes its lock; an exception inside compute_score leaves it held,
        # which would hang garbage collection.
        if scorer.lock.locked():
            scorer.lock.release()
        proc = scorer.meteor_p
        if proc.poll() is None:
            proc.stdin.close()
            proc.kill()
        proc.wait()
    return float(score), np.asarray(scores, dtype=np.float64)
