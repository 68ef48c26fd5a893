"""Fine-tuning on a custom tag list at the ``small`` preset's size (issue 11, point 3).

The test (tests/test_training_tag_lists.py) checks the contract on the ``tiny`` model in seconds; this
benchmark shows what it gives at a size that learns. On the tests' own synthetic set (tests/training_scenes.py)
it runs, offline and through the CLI a user would type::

    tag2text train --train-dir A_DATA --output-dir A --model-config small --tag-list A.txt --max-steps N1
    tag2text train --train-dir AB_DATA --output-dir AB --init-from A --tag-list A+B.txt --max-steps N2 [...]

List A holds the five shapes and three colours; B adds three colours the first model never tagged (their words
are in its captions, so its tokenizer and text embeddings know them). Each image's metadata ``tags`` are its
drawn shapes and colours within the list. Scored on held-out images against the drawn objects: tag F1 of A
before and after fine-tuning (kept within 0.05?) and of B after it, next to the F1 of tagging every B colour
on every image (what no learning gives). Prints a table.

    python benchmarks/tag_list_finetune.py --work-dir /tmp/tag-list-finetune
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import training_scenes as scenes  # noqa: E402

OLD = list(scenes.SHAPES) + ["pink", "navy", "brown"]
NEW = ["gold", "teal", "violet"]


def tagged_copy(source: Path, target: Path, keep: list[str]) -> Path:
    """The images of ``source`` (linked) with metadata ``tags``: their drawn shapes and colours within ``keep``."""
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (source / "metadata.jsonl").read_text().splitlines():
        entry = json.loads(line)
        entry["tags"] = sorted(scenes.truth_tags(entry["objects"]) & set(keep))
        lines.append(json.dumps(entry))
        link = target / entry["file_name"]
        if not link.exists():
            link.symlink_to((source / entry["file_name"]).resolve())
    (target / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="tag-list-finetune")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--heldout-images", type=int, default=200)
    parser.add_argument("--phase1-steps", type=int, default=1000)
    parser.add_argument("--phase2-steps", type=int, default=500)
    parser.add_argument("--phase2-options", default="",
                        help="more `tag2text train` options for phase 2, e.g. "
                             "--phase2-options=\"--augment --learning-rate 1e-3\" (with '=': the value starts with --) "
                             "(default: none, the fine-tuning defaults of --init-from)")
    parser.add_argument("--reuse-phase1", action="store_true", help="keep an existing WORK/A model")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    drawn, held = work / "scenes", work / "heldout"
    if not (drawn / "metadata.jsonl").is_file():
        scenes.write_scenes(drawn, args.train_images, seed=21)
    if not (held / "metadata.jsonl").is_file():
        scenes.write_scenes(held, args.heldout_images, seed=22)
    old_list, both_list = work / "A.txt", work / "A+B.txt"
    old_list.write_text("\n".join(OLD) + "\n")
    both_list.write_text("\n".join(OLD + NEW) + "\n")
    phase1 = tagged_copy(drawn, work / "data_A", OLD)
    phase2 = tagged_copy(drawn, work / "data_AB", OLD + NEW)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    tag2text = str(Path(sys.executable).with_name("tag2text"))
    runs = [
        ("phase 1 (list A)", [tag2text, "train", "--train-dir", str(phase1), "--output-dir", str(work / "A"),
                              "--model-config", "small", "--tag-list", str(old_list),
                              "--max-steps", str(args.phase1_steps)]),
        ("phase 2 (A+B)", [tag2text, "train", "--train-dir", str(phase2), "--output-dir", str(work / "AB"),
                           "--init-from", str(work / "A"), "--tag-list", str(both_list),
                           "--max-steps", str(args.phase2_steps), *args.phase2_options.split()]),
    ]
    if args.reuse_phase1 and (work / "A" / "config.json").is_file():
        runs = runs[1:]
    rows = [("data", f"{args.train_images} training, {args.heldout_images} held-out images; A = {', '.join(OLD)}; "
                     f"B = {', '.join(NEW)}")]
    for label, command in runs:
        shutil.rmtree(command[command.index("--output-dir") + 1], ignore_errors=True)
        started = time.monotonic()
        with open(work / f"{Path(command[command.index('--output-dir') + 1]).name}.log", "w") as log:
            code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        rows.append((label, f"{' '.join(['tag2text'] + command[1:])}: exit {code}, "
                            f"{(time.monotonic() - started) / 60:.1f} min"))
        if code != 0:
            print("\n".join(f"{a:<30} {b}" for a, b in rows))
            return 1
    before = scenes.model_tag_f1(work / "A", held, OLD)
    kept = scenes.model_tag_f1(work / "AB", held, OLD)
    learned = scenes.model_tag_f1(work / "AB", held, NEW)
    floor = scenes.every_tag_f1(held, NEW)
    summary = json.loads((work / "AB" / "train_summary.json").read_text())
    rows += [
        ("phase 2 defaults chosen", json.dumps(summary.get("defaults_chosen"))),
        ("A tags, after phase 1", f"F1 {before['f1']:.3f} (P {before['precision']:.3f}, R {before['recall']:.3f})"),
        ("A tags, after phase 2", f"F1 {kept['f1']:.3f} (P {kept['precision']:.3f}, R {kept['recall']:.3f}); "
                                  f"change {kept['f1'] - before['f1']:+.3f}   kept within 0.05: "
                                  f"{'yes' if kept['f1'] >= before['f1'] - 0.05 else 'NO'}"),
        ("B tags, after phase 2", f"F1 {learned['f1']:.3f} (P {learned['precision']:.3f}, "
                                  f"R {learned['recall']:.3f}); tagging every B colour everywhere: {floor:.3f}"),
    ]
    print("\n".join(f"{a:<30} {b}" for a, b in rows))
    (work / "result.json").write_text(json.dumps({"before": before, "kept": kept, "learned": learned,
                                                  "every_tag_floor": floor, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
