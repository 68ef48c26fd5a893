"""Time and peak memory of ``tag2text convert`` on a checkpoint the size of the released one.

A random state dict with the released key layout (1,038 tensors, Swin-B 384, 3,429 tags, ~1.5 GB fp32) is
saved the way the original saves checkpoints (``{'model': state_dict, 'epoch': ...}``), converted with the
released defaults, loaded back, and run once (tags and a beam-3 caption on a 384 px image). The tokenizer is
a synthetic 30,522-token WordPiece vocabulary (the real bert-base-uncased one needs the network); only its
size matters to the conversion.

    python benchmarks/convert_full_size.py [--workdir /tmp/tag2text-full-size] [--keep] [--threads N]

On a machine whose cores are busy with other work, pass ``--threads 1``: idle-spinning intra-op threads then
cost far more than they save (seen: 7 s vs 53 s for the caption on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from process_memory import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
RELEASED_NAMES = {127: "quarter", 2961: "back", 3351: "two", 3265: "three", 3338: "four", 3355: "five", 3359: "one",
                  2701: "person", 2828: "man", 1167: "woman"}


def make_inputs(workdir: Path) -> dict:
    """Write the random checkpoint, tag list and vocab; return their paths."""
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from test_conversion import original_full_size_listing  # the released layout, checked against its hash there

    generator = torch.Generator().manual_seed(0)
    state, tied = {}, {"text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
                       "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias"}
    for key, shape in original_full_size_listing():
        if key in tied:
            state[key] = state[tied[key]]
        elif key.startswith("tagging_head."):
            state[key] = state[key.replace("tagging_head.", "tag_encoder.")]
        elif key.endswith(("relative_position_index", "position_ids")):
            state[key] = torch.zeros(shape, dtype=torch.long)
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    checkpoint = workdir / "tag2text_random_full_size.pth"
    torch.save({"model": state, "epoch": 5}, checkpoint)
    tags = [RELEASED_NAMES.get(i, f"tag{i}") for i in range(3429)]
    (workdir / "tag_list.txt").write_text("\n".join(tags))
    special = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["a", "picture", "of", "|"] + [f"tag{i}" for i in range(30522)]
    (workdir / "vocab.txt").write_text("\n".join((special + words)[:30522]) + "\n")
    return {"checkpoint": checkpoint, "tag_list": workdir / "tag_list.txt", "vocab": workdir / "vocab.txt"}


def convert(paths: dict, output: Path) -> dict:
    import logging

    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(REPO))
    from tag2text.hub import convert_checkpoint

    start = time.perf_counter()
    report = convert_checkpoint(output, checkpoint=paths["checkpoint"], tag_list=paths["tag_list"],
                                tokenizer=paths["vocab"])
    return {"convert_s": round(time.perf_counter() - start, 1), "convert_peak_rss_mb": round(peak_rss_mb()),
            "tensors": report.num_tensors, "new_keys": report.new_keys}


def load_and_run(output: Path, threads: int | None) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from tag2text import Tag2TextForCaptioning, Tag2TextProcessor

    if threads:
        torch.set_num_threads(threads)

    start = time.perf_counter()
    model = Tag2TextForCaptioning.from_pretrained(output).eval()
    processor = Tag2TextProcessor.from_pretrained(output)
    loaded = time.perf_counter() - start
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    pixel_values = processor(images=image)["pixel_values"]
    start = time.perf_counter()
    with torch.no_grad():
        ids = model.generate(pixel_values)
    return {"load_s": round(loaded, 1), "caption_s": round(time.perf_counter() - start, 1),
            "pixel_values": list(pixel_values.shape), "caption_tokens": ids.shape[1],
            "threads": torch.get_num_threads(),
            "load_peak_rss_mb": round(peak_rss_mb())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where to write the 1.5 GB checkpoint and the output")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for the caption run")
    parser.add_argument("--stage", choices=["all", "inputs", "convert", "run"], default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tag2text-full-size-"))
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"checkpoint": workdir / "tag2text_random_full_size.pth", "tag_list": workdir / "tag_list.txt",
             "vocab": workdir / "vocab.txt"}
    output = workdir / "converted"
    if args.stage == "inputs":
        make_inputs(workdir)
        return 0
    if args.stage == "convert":
        print(json.dumps(convert(paths, output)))
        return 0
    if args.stage == "run":
        print(json.dumps(load_and_run(output, args.threads)))
        return 0
    # Each stage in its own process, so that each peak RSS is its own.
    results = {}
    try:
        for stage in ("inputs", "convert", "run"):
            command = [sys.executable, __file__, "--workdir", str(workdir), "--stage", stage]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.stderr.write(done.stderr[-4000:])
                return done.returncode
            if stage != "inputs":
                results.update(json.loads(done.stdout.strip().splitlines()[-1]))
        results["checkpoint_gb"] = round(paths["checkpoint"].stat().st_size / 1e9, 2)
        results["output_gb"] = round(sum(p.stat().st_size for p in output.iterdir()) / 1e9, 2)
        print(json.dumps(results, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
