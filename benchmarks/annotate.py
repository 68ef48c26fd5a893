"""Annotating a folder: the ``caption`` command as the issue found it against ``caption --output-dir``.

Same run, same drawn 384 px JPEG images, same model directory (released sizes, random weights: Swin-B 384,
3,429 tags, BERT-base encoder and decoder, a 30,524-token vocabulary; nothing is downloaded), default beam
search (3 beams), batch 8. Every configuration runs as a fresh command in its own process tree:

* ``caption (baseline)``: ``hub/caption_command.py`` of ``--baseline-ref`` (default: the commit before sharded
  annotation), called as the command calls it: images decoded in the main thread, the vision tower run twice
  per batch (``model.tag`` and ``model.generate``), one JSON-lines file;
* ``--output-dir, P proc x W workers``: the new path, P processes under ``torchrun`` (gloo), W DataLoader
  workers each.

Columns: images/s over the whole command (start-up and model loading included) and over the annotation
itself (from the moment the last process had its model loaded to the end), CPU seconds per image (user +
system of the whole process tree; over the command, and over the annotation: each process's own and its
DataLoader workers' time after its model loaded), and the peak proportional memory (PSS) of the whole tree,
sampled every 0.2 s (so shared pages of forked workers count once). On a machine shared with other work, the
CPU seconds are the steadier measure: wall-clock rates move with the other processes' load. With ``--device
cuda`` a last column gives the peak GPU memory (``torch.cuda.max_memory_allocated`` of the busiest process: the
weights, the activations and the beam search's cache; the CUDA context is not counted). "images/s (after batch
1)" counts the batches after each process's first ``generate`` call, which also pays for the first kernels.

    python benchmarks/annotate.py [--max-images 400] [--rounds 1] [--device cpu] [--batch-sizes 8]
    python benchmarks/annotate.py --device cuda --dtype bfloat16 --batch-sizes 8 32 64 --configs new-1x8

(``benchmarks/gpu_check.sh`` runs the second line after the GPU tests.)

On a 2-core CPU the three configurations cost about 11 CPU seconds per image together, so the full 400 images
take over an hour per round; ``--max-images 16`` took 18 minutes on a busy shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
BASELINE_REF = "8b8d606"  # main when issue 15 was filed: `caption` runs the vision tower twice per batch


def _vocab(directory: Path) -> Path:
    """A vocab.txt with bert-base-uncased's layout: specials at 0 and 100-103, 30,522 entries."""
    words = [f"[unused{i}]" for i in range(30522)]
    words[0], words[100], words[101], words[102], words[103] = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
    common = ["a", "picture", "of", "the", "|", "on", "in", "with", "and", "dog", "cat", "man", "woman", "street"]
    for offset, word in enumerate(common):
        words[1000 + offset] = word
    for index in range(2000, 30522):
        words[index] = f"w{index}"
    path = directory / "vocab.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def build_model_directory(directory: Path) -> Path:
    import torch

    from tag2text import (Tag2TextForCaptioning, Tag2TextImageProcessor, Tag2TextProcessor, build_tokenizer,
                          preset_config)

    target = directory / "model"
    if (target / "config.json").is_file():
        return target
    tokenizer = build_tokenizer(_vocab(directory))
    torch.manual_seed(0)
    config = preset_config("tag2text-swin-b-384", tokenizer=tokenizer)
    model = Tag2TextForCaptioning(config).eval()
    with torch.no_grad():  # spread tag probabilities so that some tags fire, as with trained weights
        model.tagging_head.classifier_bias.copy_(torch.linspace(-4, 4, config.num_tags))
    model.save_pretrained(target)
    Tag2TextProcessor(image_processor=Tag2TextImageProcessor(size=384), tokenizer=tokenizer).save_pretrained(target)
    return target


def draw_images(folder: Path, count: int, size: int = 384) -> Path:
    """``count`` JPEGs of random coloured shapes on a gradient, ``size`` px square (fixed seeds)."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = folder / f"{index:04d}.jpg"
        if path.is_file():
            continue
        rng = np.random.default_rng(index)
        ramp = np.linspace(0, 255, size, dtype=np.float32)
        base = np.stack([np.add.outer(ramp, ramp) / 2 * rng.uniform(0.3, 1.0) for _ in range(3)], axis=-1)
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = rng.integers(0, size - 40, size=2)
            x1, y1 = x0 + rng.integers(20, size // 2), y0 + rng.integers(20, size // 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([int(x0), int(y0), int(x1), int(y1)], fill=colour)
        image.save(path, quality=90)
    return folder


def _baseline_module(directory: Path, ref: str) -> Path:
    source = subprocess.run(["git", "-C", str(REPOSITORY), "show", f"{ref}:hub/caption_command.py"],
                            capture_output=True, text=True, check=True).stdout
    path = directory / f"caption_command_{ref}.py"
    path.write_text(source, encoding="utf-8")
    return path


# -- the measured child -----------------------------------------------------------------------------------------


def child_main(argv):
    """Run one configuration's command in this process (under torchrun: in each rank), recording when the
    model finished loading and when the command ended."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--timing", required=True)
    parser.add_argument("--baseline", default=None)
    known, command = parser.parse_known_args(argv)
    import logging

    import tag2text
    from tag2text import Tag2TextForCaptioning

    logging.basicConfig(level=logging.WARNING)
    loaded, batches = {}, []
    original = Tag2TextForCaptioning.from_pretrained.__func__

    def timed_from_pretrained(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        loaded["at"], loaded["cpu"] = time.time(), _cpu_seconds()
        model.generate = _timed_generate(model.generate, batches)
        return model

    Tag2TextForCaptioning.from_pretrained = classmethod(timed_from_pretrained)
    from tag2text.hub.cli import build_parser

    if known.baseline:
        import importlib.util

        spec = importlib.util.spec_from_file_location("tag2text.hub.caption_command_baseline", known.baseline)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sub = argparse.ArgumentParser()
        module.add_arguments(sub)
        status = module.run(sub.parse_args(command))
    else:
        from tag2text.hub import caption_command

        status = caption_command.run(build_parser("caption").parse_args(["caption", *command]))
    rank = os.environ.get("RANK", "0")
    with open(f"{known.timing}.{rank}", "w") as handle:
        json.dump({"loaded": loaded.get("at"), "end": time.time(), "status": status, "cpu_loaded": loaded.get("cpu"),
                   "cpu_end": _cpu_seconds(), "peak_gpu_mb": _peak_gpu_mb(), "batches": batches}, handle)
    del tag2text
    return 0


def _timed_generate(generate, batches: list):
    """``generate`` that appends (end time, images) of every call to ``batches``: the steady rate leaves out
    the first batch, which also pays for moving the weights to the device and the first kernels' set-up."""

    def timed(*args, **kwargs):
        import torch

        output = generate(*args, **kwargs)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the call's kernels are done when its time is taken
        inputs = args[0] if args else kwargs.get("pixel_values", kwargs.get("image_embeds"))
        batches.append((time.time(), int(inputs.shape[0]) if inputs is not None else 0))
        return output

    return timed


def _peak_gpu_mb() -> float | None:
    """The most GPU memory torch's allocator held at once in this process (None when CUDA was not used)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _cpu_seconds() -> float:
    """User + system seconds of this process and its reaped children (the DataLoader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _tree_pss_mb(pid: int) -> float:
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
            with open(f"/proc/{current}/task/{current}/children") as handle:
                stack.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return total / 1024


def measure(name, command, images: int, timing: Path, threads: int | None = None) -> dict:
    for old in timing.parent.glob(timing.name + ".*"):
        old.unlink()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                    **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _tree_pss_mb(process.pid))
        time.sleep(0.2)
    stderr = process.stderr.read()
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ranks = [json.loads(p.read_text()) for p in sorted(timing.parent.glob(timing.name + ".*"))]
    if process.returncode != 0 or not ranks:
        raise RuntimeError(f"{name} failed ({process.returncode}):\n{stderr[-3000:]}")
    annotate_seconds = max(r["end"] for r in ranks) - max(r["loaded"] for r in ranks)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    annotate_cpu = sum(r["cpu_end"] - r["cpu_loaded"] for r in ranks)
    gpu = [r["peak_gpu_mb"] for r in ranks if r.get("peak_gpu_mb") is not None]
    # After each process's first batch: images of the later batches over the time from the last first batch's
    # end to the last batch's end (None with one batch per process, or when no generate call was seen).
    later = [r["batches"] for r in ranks if len(r.get("batches") or []) > 1]
    steady = None
    if later and len(later) == len(ranks):
        span = max(b[-1][0] for b in later) - max(b[0][0] for b in later)
        steady = sum(images for b in later for _, images in b[1:]) / span if span > 0 else None
    return {"config": name, "images_per_s": images / wall, "annotate_images_per_s": images / annotate_seconds,
            "cpu_s_per_image": cpu / images, "annotate_cpu_s_per_image": annotate_cpu / images, "peak_pss_mb": peak,
            "steady_images_per_s": steady, "peak_gpu_mb": max(gpu) if gpu else None, "wall_s": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-images", type=int, default=400, help="how many of the 400 drawn images to annotate")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every configuration, alternating")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--configs", nargs="+", default=["baseline", "new-1x1", "new-2x1"],
                        help="baseline, new-PxW (P processes, W workers each)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of every process (default: torch's choice; torchrun sets 1 per process)")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git revision of the baseline caption command")
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "tag2text_annotate_benchmark"))
    args = parser.parse_args()
    if args.max_images < 1 or args.max_images > 400:
        parser.error("--max-images must be between 1 and 400")

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = build_model_directory(work)
    images = draw_images(work / "images", 400)
    subset = work / f"images_{args.max_images}"
    if not subset.is_dir():
        subset.mkdir()
        for path in sorted(images.glob("*.jpg"))[: args.max_images]:
            os.symlink(path, subset / path.name)
    # The baseline's source comes from git: only read when it is measured (a copied tree may have no .git).
    baseline = _baseline_module(work, args.baseline_ref) if "baseline" in args.configs else None
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    results = []
    for round_index in range(args.rounds):
        for batch in args.batch_sizes:
            common = ["--model", str(model), str(subset), "--batch-size", str(batch), "--device", args.device,
                      "--dtype", args.dtype]
            for config in args.configs:
                timing = work / f"timing_{config}"
                output = work / f"out_{config}_{batch}_{round_index}"
                if config == "baseline":
                    command = [*me, "--timing", str(timing), "--baseline", str(baseline), *common,
                               "--output", str(output) + ".jsonl"]
                    label = f"caption (baseline {args.baseline_ref})"
                else:
                    processes, workers = (int(x) for x in config.removeprefix("new-").split("x"))
                    subprocess.run(["rm", "-rf", str(output)], check=True)
                    command = [*me, "--timing", str(timing), *common, "--output-dir", str(output),
                               "--num-workers", str(workers)]
                    if processes > 1:
                        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                   str(processes), *command[1:]]
                    label = f"--output-dir, {processes} proc x {workers} workers"
                result = measure(label, command, args.max_images, timing, args.threads)
                result.update(batch=batch, round=round_index)
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)

    threads = args.threads or "default"
    print(f"\n{args.max_images} images at 384 px, {args.device} {args.dtype}, {os.cpu_count()} CPUs, "
          f"threads {threads}\n")
    on_gpu = args.device.startswith("cuda")
    print("| configuration | batch | images/s (command) | images/s (annotation) | images/s (after batch 1) "
          "| CPU s/image (command) | CPU s/image (annotation) | peak PSS MB |" + (" peak GPU MB |" if on_gpu else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if on_gpu else ""))
    best = {}
    for result in results:
        key = (result["config"], result["batch"])
        if key not in best or result["annotate_images_per_s"] > best[key]["annotate_images_per_s"]:
            best[key] = result
    for result in best.values():
        steady = "n/a" if result["steady_images_per_s"] is None else f"{result['steady_images_per_s']:.3f}"
        print(f"| {result['config']} | {result['batch']} | {result['images_per_s']:.3f} | "
              f"{result['annotate_images_per_s']:.3f} | {steady} | {result['cpu_s_per_image']:.2f} | "
              f"{result['annotate_cpu_s_per_image']:.2f} | {result['peak_pss_mb']:.0f} |"
              + (f" {result['peak_gpu_mb']:.0f} |" if on_gpu and result["peak_gpu_mb"] is not None
                 else " n/a |" if on_gpu else ""))
    for batch in args.batch_sizes:
        base = next((r for (c, b), r in best.items() if b == batch and c.startswith("caption")), None)
        if base is None:
            continue
        for (config, b), result in best.items():
            if b == batch and result is not base:
                rate = result["annotate_images_per_s"] / base["annotate_images_per_s"]
                command_rate = result["images_per_s"] / base["images_per_s"]
                cpu = base["annotate_cpu_s_per_image"] / result["annotate_cpu_s_per_image"]
                print(f"batch {batch}: {config}: {rate:.2f}x the baseline's annotation rate, {command_rate:.2f}x its "
                      f"whole-command rate, {cpu:.2f}x less CPU time per image in the annotation")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    main()
