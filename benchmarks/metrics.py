"""Caption metrics: speed and agreement of tag2text's metrics against pycocoevalcap, same run.

Scores the 4,982-image MAGIC / Karpathy-test set (``magic_gt.json``, ``magic_res.json`` in the
project's shared reference data, COCO format) with pycocoevalcap and with
``tag2text.training.metrics``, times each stage (best of ``--repeats``), and reports:

* a timing table with the ratio toolkit / ours (> 1: ours is faster), for tokenisation, for
  BLEU + ROUGE-L + CIDEr on the same tokenised text, and end to end without METEOR;
* agreement of corpus scores and per-image scores with the toolkit, for the Java tokenizer and
  for the Python reimplementation;
* how many captions the Python tokenizer tokenises differently from the Java one.

    python benchmarks/metrics.py [--data-dir ../shared/reference/coco] [--repeats 3] [--meteor]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def _best_of(repeats, fn):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _load(data_dir: Path):
    gt = json.loads((data_dir / "magic_gt.json").read_text())
    res = json.loads((data_dir / "magic_res.json").read_text())
    refs: dict[int, list[str]] = {img["id"]: [] for img in gt["images"]}
    for ann in gt["annotations"]:
        refs[ann["image_id"]].append(ann["caption"])
    preds = {r["image_id"]: r["caption"] for r in res}
    refs = {i: caps for i, caps in refs.items() if i in preds}
    return refs, preds


def _toolkit_tokenize(refs, preds):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": c} for c in caps] for i, caps in refs.items()})
    res = tok.tokenize({i: [{"caption": preds[i]}] for i in refs})
    return gts, res


def _toolkit_score(gts, res, meteor=False):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    corpus, per_image, times = {}, {i: {} for i in gts}, {}
    scorers = [(Bleu(4), list(NAMES[:4])), (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]
    if meteor:
        scorers.append((Meteor(), ["METEOR"]))
    for scorer, names in scorers:
        start = time.perf_counter()
        if names[0] == "Bleu_1":
            score, scores = scorer.compute_score(gts, res, verbose=0)
        else:
            score, scores = scorer.compute_score(gts, res)
            score, scores = [score], [scores]
        times[names[0].split("_")[0]] = time.perf_counter() - start
        for name, s, per in zip(names, score, scores):
            corpus[name] = float(s)
            for i, v in zip(gts.keys(), per):
                per_image[i][name] = float(v)
    return corpus, per_image, times


def _agreement(ours, corpus, per_image, names):
    rows = []
    for name in names:
        diff_corpus = abs(ours["corpus"][name] - corpus[name])
        diffs = np.array([abs(ours["per_image"][i][name] - per_image[i][name]) for i in per_image])
        rows.append((name, diff_corpus, diffs.max(), 100 * np.mean(diffs <= 1e-6)))
    return rows


def _print_agreement(title, rows):
    print(f"\n{title}")
    print(f"{'metric':<8} {'|corpus diff|':>14} {'max |per-image diff|':>21} {'images within 1e-6':>19}")
    for name, dc, dp, frac in rows:
        print(f"{name:<8} {dc:>14.2e} {dp:>21.2e} {frac:>18.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "reference" / "coco")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meteor", action="store_true", help="also compare METEOR (two ~25 s Java runs)")
    args = parser.parse_args()

    from tag2text.training.metrics import compute_caption_metrics
    from tag2text.training.metrics.tokenization import tokenize_caption_batches

    refs, preds = _load(args.data_dir)
    ids = list(refs)
    ref_flat = [c for i in ids for c in refs[i]]
    pred_list = [preds[i] for i in ids]
    print(f"{len(ids)} images, {len(ref_flat)} references")

    t_tok_kit, (gts, res) = _best_of(args.repeats, lambda: _toolkit_tokenize(refs, preds))
    t_tok_java, (ref_java, pred_java) = _best_of(
        args.repeats, lambda: tokenize_caption_batches([ref_flat, pred_list], "java")
    )
    t_tok_py, (ref_py, pred_py) = _best_of(
        args.repeats, lambda: tokenize_caption_batches([ref_flat, pred_list], "python")
    )

    kit_times_all = []
    for _ in range(args.repeats):
        kit_corpus, kit_per_image, kit_times = _toolkit_score(gts, res)
        kit_times_all.append(kit_times)
    kit_stage = {k: min(t[k] for t in kit_times_all) for k in kit_times_all[0]}
    t_kit_brc = min(sum(t.values()) for t in kit_times_all)

    tok_refs = {i: gts[i] for i in ids}
    tok_preds = {i: res[i][0] for i in ids}
    t_ours_brc, ours_tok = _best_of(
        args.repeats, lambda: compute_caption_metrics(tok_refs, tok_preds, tokenizer="none", meteor=False)
    )
    t_ours_e2e, ours_java = _best_of(
        args.repeats, lambda: compute_caption_metrics(refs, preds, tokenizer="java", meteor=False)
    )
    ours_py = compute_caption_metrics(refs, preds, tokenizer="python", meteor=False)

    print("\nTiming (seconds, best of %d; ratio = toolkit / ours, > 1 means ours is faster)" % args.repeats)
    print(f"{'stage':<44} {'pycocoevalcap':>13} {'tag2text':>9} {'ratio':>7}")

    def row(label, kit, ours):
        print(f"{label:<44} {kit:>13.2f} {ours:>9.2f} {kit / ours:>7.2f}")

    row("PTB tokenisation (Java), refs + predictions", t_tok_kit, t_tok_java)
    row("PTB tokenisation, ours in Python", t_tok_kit, t_tok_py)
    row("BLEU-1..4 + ROUGE-L + CIDEr-D (same tokens)", t_kit_brc, t_ours_brc)
    row("end to end without METEOR (Java tokenizer)", t_tok_kit + t_kit_brc, t_ours_e2e)
    print("toolkit per scorer: " + ", ".join(f"{k} {v:.2f} s" for k, v in kit_stage.items()))

    names = [n for n in NAMES if n != "METEOR"]
    if args.meteor:
        start = time.perf_counter()
        kit_corpus, kit_per_image, _ = _toolkit_score(gts, res, meteor=True)
        t_kit_meteor = time.perf_counter() - start
        start = time.perf_counter()
        ours_java = compute_caption_metrics(refs, preds, tokenizer="java", meteor=True)
        t_ours_all = time.perf_counter() - start
        names = list(NAMES)
        row("all seven metrics incl. METEOR, one run", t_tok_kit + t_kit_meteor, t_ours_all)

    _print_agreement(
        "Agreement with pycocoevalcap, Java tokenizer", _agreement(ours_java, kit_corpus, kit_per_image, names)
    )
    _print_agreement(
        "Agreement with pycocoevalcap, Python tokenizer",
        _agreement(ours_py, kit_corpus, kit_per_image, [n for n in names if n != "METEOR"]),
    )

    toolkit_flat = [c for i in ids for c in gts[i]] + [res[i][0] for i in ids]
    java_flat = list(ref_java) + list(pred_java)
    py_flat = list(ref_py) + list(pred_py)
    java_vs_kit = sum(a != b for a, b in zip(java_flat, toolkit_flat))
    py_vs_java = sum(a != b for a, b in zip(py_flat, java_flat))
    print(
        f"\nTokenised captions differing: our Java wrapper vs toolkit {java_vs_kit} of {len(java_flat)}; "
        f"Python tokenizer vs Java {py_vs_java} of {len(java_flat)} ({100 * py_vs_java / len(java_flat):.3f}%)"
    )
    print("Corpus scores (ours, Java tokenizer): " + ", ".join(
        f"{n} {100 * ours_java['corpus'][n]:.2f}" for n in NAMES if ours_java["corpus"][n] is not None))


if __name__ == "__main__":
    main()
