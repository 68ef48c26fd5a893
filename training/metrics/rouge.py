"""ROUGE-L as the COCO caption toolkit computes it: pycocoevalcap's own scorer, called per image.

The toolkit's ROUGE-L (LCS-based F-measure with beta = 1.2, the best precision and the best
recall over the references combined) is cheap next to BLEU and CIDEr, so it is reused as is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["rouge_l_scores"]


def rouge_l_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """Corpus (mean) and per-image ROUGE-L of tokenised ``hypotheses`` against ``references``."""
    try:
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as exc:  # keeps the tagging and retrieval metrics usable without the extra
        raise ImportError("caption metrics need pycocoevalcap: pip install 'tag2text[metrics]'") from exc
    scorer = Rouge()
    per_image = np.array([scorer.calc_score([hyp], list(refs)) for hyp, refs in zip(hypotheses, references)])
    return float(np.mean(per_image)), per_image
