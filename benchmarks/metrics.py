"""Caption metrics: speed and agreement of tag2text's metrics against pycocoevalcap, same run.

Scores the 4,982-image MAGIC / Karpathy-test set (``magic_gt.json``, ``magic_res.json`` in the
project's shared reference data, COCO format) with pycocoevalcap and with
``tag2text.training.metrics``, times each stage (best of ``--repeats``), and reports:

* a timing table with the ratio toolkit / ours (> 1: ours is faster), for tokenisation, for
  BLEU + ROUGE-L + CIDEr on the same tokenised text, and end to end without METEOR;
* agreement of corpus scores and per-image scores with the toolkit, for the Java tokenizer and
  for this project's Python tokenizer (``tag2text.training.metrics.caption_tokenizer``);
* token-sequence agreement of the Python tokenizer with the Java one on every COCO val2017
  caption (``captions_val2017.json``) and on the MAGIC references and predictions, raw (before
  the toolkit drops punctuation) and as scored, with every disagreement printed;
* the corpus scores computed with each tokenizer side by side.

    python benchmarks/metrics.py [--data-dir ../shared/reference/coco] [--repeats 3] [--meteor]

``--record-fixture`` instead re-runs the Java tokenizer on the inputs stored in
``tests/fixtures/ptb_java_reference.json`` and rewrites the expected outputs there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
FIXTURE = REPO / "tests" / "fixtures" / "ptb_java_reference.json"


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


def _raw_agreement(title, captions):
    """Python vs Java tokenizer on one stream of captions: raw output lines and scored text."""
    from tag2text.training.metrics.caption_tokenizer import tokenize_lines
    from tag2text.training.metrics.tokenization import _clean, _run_java, _strip_punctuation

    lines = [_clean(c) for c in captions]
    start = time.perf_counter()
    java = _run_java(lines)
    t_java = time.perf_counter() - start
    start = time.perf_counter()
    ours = tokenize_lines(lines)
    t_ours = time.perf_counter() - start
    raw_diff = [k for k, (a, b) in enumerate(zip(java, ours)) if a != b]
    scored_diff = [k for k in raw_diff if _strip_punctuation(java[k]) != _strip_punctuation(ours[k])]
    n = len(lines)
    print(
        f"{title:<34} {n:>7} captions: raw token sequences identical {n - len(raw_diff):>6} "
        f"({100 * (n - len(raw_diff)) / n:.3f}%), as scored {n - len(scored_diff):>6} "
        f"({100 * (n - len(scored_diff)) / n:.3f}%); Java {t_java:.2f} s, Python {t_ours:.2f} s"
    )
    for k in raw_diff:
        print(f"    caption {k}: {lines[k]!r}\n      java:   {java[k]!r}\n      python: {ours[k]!r}")
    return len(raw_diff)


def record_fixture() -> None:
    """Re-run the Java tokenizer on the fixture's inputs and store its outputs as the expectation."""
    from tag2text.training.metrics.tokenization import _jar_path, _run_java

    data = json.loads(FIXTURE.read_text())
    # Each single case is tokenised alone (end-of-text behaviour included), each stream as one input.
    data["single"] = [[text, _run_java([text])[0]] for text, _ in data["single"]]
    data["streams"] = [[lines, _run_java(lines)] for lines, _ in data["streams"]]
    version = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    data["recorded_with"] = {
        "command": "java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer "
        "-preserveLines -lowerCase  (captions joined by newlines on stdin, no trailing newline)",
        "jar": f"{_jar_path().name} from pycocoevalcap 1.2",
        "java": version,
        "date": datetime.date.today().isoformat(),
    }
    FIXTURE.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    print(f"rewrote {FIXTURE}: {len(data['single'])} single cases, {len(data['streams'])} streams")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "reference" / "coco")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meteor", action="store_true", help="also compare METEOR (two ~25 s Java runs)")
    parser.add_argument("--record-fixture", action="store_true", help="rewrite the tokenizer test fixture")
    args = parser.parse_args()
    if args.record_fixture:
        record_fixture()
        return

    from tag2text.training.metrics import compute_caption_metrics
    from tag2text.training.metrics.tokenization import tokenize_caption_batches

    refs, preds = _load(args.data_dir)
    ids = list(refs)
    ref_flat = [c for i in ids for c in refs[i]]
    pred_list = [preds[i] for i in ids]
    print(f"{len(ids)} images, {len(ref_flat)} references")

    print("\nPython tokenizer vs the Java one (same caption streams as the toolkit reads):")
    coco = json.loads((args.data_dir / "captions_val2017.json").read_text())
    _raw_agreement("COCO val2017 captions", [a["caption"] for a in coco["annotations"]])
    _raw_agreement("MAGIC references", ref_flat)
    _raw_agreement("MAGIC predictions", pred_list)

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
        ours_py = compute_caption_metrics(refs, preds, tokenizer="python", meteor=True)
        names = list(NAMES)
        row("all seven metrics incl. METEOR, one run", t_tok_kit + t_kit_meteor, t_ours_all)

    _print_agreement(
        "Agreement with pycocoevalcap, Java tokenizer", _agreement(ours_java, kit_corpus, kit_per_image, names)
    )
    _print_agreement(
        "Agreement with pycocoevalcap, Python tokenizer", _agreement(ours_py, kit_corpus, kit_per_image, names)
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
    print(f"\n{'corpus score x100':<18} {'Java tokenizer':>15} {'Python tokenizer':>17} {'|difference|':>13}")
    for n in names:
        j, p = ours_java["corpus"][n], ours_py["corpus"][n]
        print(f"{n:<18} {100 * j:>15.6f} {100 * p:>17.6f} {abs(j - p):>13.2e}")


if __name__ == "__main__":
    main()
