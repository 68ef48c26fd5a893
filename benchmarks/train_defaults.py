"""Acceptance of ``tag2text train`` with its defaults on data the project never trained on (issue 11).

Draws the tests' own synthetic set (tests/training_scenes.py: other shapes, colours, background and sentence
forms than the quickstart's), runs exactly::

    tag2text train --train-dir D --output-dir O --model-config small --max-steps 1500
    tag2text caption --model O HELDOUT

offline (HF_HUB_OFFLINE=1), and scores the captions and tags of the held-out images against the drawn
objects (not against anything the training code computed). Prints a table; targets: tag F1 >= 0.9,
captions naming every object with its colour on >= 60% of the images.

Also compares the two from-captions tokenizers (WordPiece, the default, against the whole-word vocabulary)
on COCO captions where ../shared has them: vocabulary size and [UNK] rate on captions of unseen images.

    python benchmarks/train_defaults.py --work-dir /tmp/train-defaults [--train-images 3000] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import training_scenes as scenes  # noqa: E402


def tokenizer_comparison(work: Path) -> list[tuple[str, str]]:
    coco = REPO.parent / "shared" / "reference" / "coco" / "captions_val2017.json"
    if not coco.is_file():
        coco = Path("/work/shared/reference/coco/captions_val2017.json")
    if not coco.is_file():
        return [("tokenizer comparison", "skipped: no COCO captions in ../shared")]
    from tag2text import build_tokenizer
    from tag2text.training.model_setup import train_caption_wordpiece, write_caption_vocabulary

    annotations = json.loads(coco.read_text())["annotations"]
    by_image: dict[int, list[str]] = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a["caption"])
    images = sorted(by_image)
    train = [c for i in images[:4000] for c in by_image[i]]
    test = [c for i in images[4000:] for c in by_image[i]]
    rows = [("COCO captions", f"{len(train)} of 4,000 images to build, {len(test)} of {len(images) - 4000} unseen "
                              "images to test")]
    for name, path in (("WordPiece (default)", train_caption_wordpiece(train, work / "wp" / "vocab.txt")),
                       ("whole words", write_caption_vocabulary(train, work / "ww" / "vocab.txt"))):
        tokenizer = build_tokenizer(path)
        ids = tokenizer(test, add_special_tokens=False)["input_ids"]
        tokens = sum(len(x) for x in ids)
        unknown = sum(x.count(tokenizer.unk_token_id) for x in ids)
        with_unk = sum(tokenizer.unk_token_id in x for x in ids)
        rows.append((f"  {name}", f"{len(tokenizer)} tokens; unseen captions: {100 * unknown / tokens:.2f}% of tokens "
                                  f"[UNK], {100 * with_unk / len(ids):.1f}% of captions hold an [UNK]; "
                                  f"{tokens / len(ids):.1f} tokens per caption"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="train-defaults")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--heldout-images", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--skip-train", action="store_true", help="score an existing WORK/model")
    args = parser.parse_args()
    work = Path(args.work_dir)
    train_dir, held_dir, model_dir = work / "train", work / "heldout", work / "model"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    tag2text = str(Path(sys.executable).with_name("tag2text"))
    rows = []
    if not args.skip_train:
        started = time.monotonic()
        if not (train_dir / "metadata.jsonl").is_file():  # the same seeds draw the same images
            scenes.write_scenes(train_dir, args.train_images, seed=11)
            scenes.write_scenes(held_dir, args.heldout_images, seed=12)
        rows.append(("data", f"{args.train_images} training, {args.heldout_images} held-out images "
                             f"({time.monotonic() - started:.0f} s to draw)"))
        command = [tag2text, "train", "--train-dir", str(train_dir), "--output-dir", str(model_dir),
                   "--model-config", "small", "--max-steps", str(args.max_steps)]
        started = time.monotonic()
        with open(work / "train.log", "w") as log:
            code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        rows.append(("train", f"{' '.join(['tag2text'] + command[1:])}: exit {code}, "
                              f"{(time.monotonic() - started) / 60:.1f} min"))
        if code != 0:
            print("\n".join(f"{a:<28} {b}" for a, b in rows))
            return 1
    started = time.monotonic()
    captions_file = work / "captions.jsonl"
    code = subprocess.run([tag2text, "caption", "--model", str(model_dir), str(held_dir), "--output",
                           str(captions_file)], env=env, capture_output=True, text=True).returncode
    rows.append(("caption", f"exit {code}, {time.monotonic() - started:.0f} s"))
    truth = scenes.read_truth(held_dir)
    predicted, named = {}, 0
    for line in captions_file.read_text().splitlines():
        entry = json.loads(line)
        key = Path(entry["image"]).name
        predicted[key] = set(entry["tags"])
        named += scenes.caption_names_every_object(entry["caption"] or "", truth[key])
    f1 = scenes.tag_f1(predicted, {k: scenes.truth_tags(v) for k, v in truth.items()})
    summary = json.loads((model_dir / "train_summary.json").read_text())
    calibration = summary.get("threshold_calibration") or {}
    rows += [
        ("tokenizer", f"{summary.get('tokenizer')}, {summary.get('vocabulary_size')} tokens"),
        ("defaults chosen", json.dumps(summary.get("defaults_chosen"))),
        ("held out for thresholds", json.dumps(summary.get("holdout"))),
        ("calibrated thresholds", f"{calibration.get('num_thresholds')}; held-out F1 "
                                  f"{calibration.get('holdout_tag_OF1_at_global_threshold')} at the global "
                                  f"threshold -> {calibration.get('holdout_tag_OF1_calibrated')} calibrated"),
        ("steps", f"{summary.get('global_step')} of {summary.get('planned_steps')}"),
        ("tag F1 (held-out, micro)", f"{f1['f1']:.3f} (P {f1['precision']:.3f}, R {f1['recall']:.3f}); "
                                     f"per-tag mean {f1['macro_f1']:.3f}   target >= 0.9: "
                                     f"{'met' if f1['f1'] >= 0.9 else 'NOT met'}"),
        ("captions name every object", f"{100 * named / len(truth):.1f}% of {len(truth)}   target >= 60%: "
                                       f"{'met' if named / len(truth) >= 0.6 else 'NOT met'}"),
    ]
    examples = [json.loads(line) for line in captions_file.read_text().splitlines()[:5]]
    for entry in examples:
        drawn = ", ".join(f"{o['colour']} {o['shape']}" for o in truth[Path(entry["image"]).name])
        rows.append((f"  {Path(entry['image']).name}", f"drawn: {drawn} | tags: {', '.join(entry['tags'])} | "
                                                       f"caption: {entry['caption']}"))
    rows += tokenizer_comparison(work)
    print("\n".join(f"{a:<28} {b}" for a, b in rows))
    (work / "result.json").write_text(json.dumps({"tag_f1": f1, "captions_name_every_object": named / len(truth),
                                                  "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
