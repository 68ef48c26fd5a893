"""Inference speed and memory: Tag2Text (tagging + captioning) against BLIP-base captioning, same run.

Both models have random weights at their released sizes (Tag2Text: Swin-B 384, 3,429 tags, 12-layer encoder
and decoder; BLIP: ViT-B/16 384, BERT-base decoder), see the same 384 px images and generate exactly the same
number of tokens (beam 3, min_length = max_length = 30). Each configuration runs in a fresh process so that
peak resident memory (VmHWM) belongs to it alone.

    python benchmarks/inference.py [--batch-sizes 1 8] [--dtypes float32 bfloat16 bfloat16-weights] [--repeats 2] [--rounds 2]
    python benchmarks/inference.py --baseline /work/main --no-blip   # this checkout against another, A/B
    python benchmarks/inference.py --packing --no-blip               # the model as built against packed weights

``--baseline DIR`` also runs Tag2Text from another checkout of this repository (its package folders laid out
as ``tag2text`` in a temporary directory), alternating with this one in every round, and prints both with
their ratio. ``--packing`` also runs this checkout's model with packed CPU weights
(``tag2text.cpu_packing.pack_cpu_weights``, what the caption, annotate, serve and evaluate commands use) and
prints it against the model as built (``nn.Linear``) and against the baseline. ``--compile`` adds
``torch.compile`` (inductor) of the tagging path, timed after compilation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from process_memory import peak_rss_mb, reset_peak

# package_dir of setup.cfg: where each part of the tag2text namespace lives in a checkout
PACKAGE_FOLDERS = {"modeling_tag2text": "", "processing": "processing", "training": "training", "hub": "hub"}
# The Tag2Text runs: this checkout as built, this checkout with packed CPU weights, another checkout.
TAG2TEXT_RUNS = ("tag2text", "packed", "baseline")


def _build(name):
    import torch

    torch.manual_seed(0)
    if name in TAG2TEXT_RUNS:
        from tag2text import Tag2TextForCaptioning, preset_config

        config = preset_config("tag2text-swin-b-384")
        # Token ids of the real tokenizer's layout ([DEC]=30522, [ENC]=30523, '|'=1064, 'a picture of').
        config.tag_token_ids = [[2000 + (i % 20000)] for i in range(config.num_tags)]
        config.tag_separator_token_ids = [1064]
        config.prompt_token_ids = [1037, 3861, 1997]
        model = Tag2TextForCaptioning(config).eval()
        with torch.no_grad():
            # spread tag probabilities so that some tags fire, as with trained weights
            model.tagging_head.classifier_bias.copy_(torch.linspace(-4, 4, config.num_tags))
        if name == "packed":
            from tag2text.cpu_packing import pack_cpu_weights

            pack_cpu_weights(model)
        return model
    from transformers import BlipConfig, BlipForConditionalGeneration

    config = BlipConfig(vision_config={"image_size": 384, "patch_size": 16}, text_config={"vocab_size": 30524})
    return BlipForConditionalGeneration(config).eval()


def _run_one(name, batch_size, dtype, repeats):
    import torch

    model = _build(name)
    pixel_values = torch.randn(batch_size, 3, 384, 384)
    if dtype == "bfloat16-weights":  # the whole model cast to bf16 (what `tag2text caption --dtype bfloat16` does)
        model, pixel_values = model.to(torch.bfloat16), pixel_values.to(torch.bfloat16)
    kwargs = dict(num_beams=3, max_length=30, min_length=30)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    times = []
    tags = None
    with torch.no_grad(), autocast:
        model.generate(pixel_values=pixel_values[:1], num_beams=1, max_length=6, min_length=6)  # warm-up
        reset_peak()
        for _ in range(repeats):
            start = time.perf_counter()
            out = model.generate(pixel_values=pixel_values, **kwargs)
            times.append(time.perf_counter() - start)
        if name in TAG2TEXT_RUNS:
            logits = model.get_tag_logits(model.get_image_embeddings(pixel_values)).float()
            tags = torch.sigmoid(logits).tolist()
    tokens = int(out.shape[1])
    # The generated ids, to tell whether two runs of the same seeded weights wrote the same captions.
    ids = hashlib.sha1(json.dumps(out.tolist()).encode()).hexdigest()[:12]
    return {"seconds_per_image": min(times) / batch_size, "peak_rss_mb": peak_rss_mb(), "tokens": tokens,
            "ids": ids, "tag_probs": tags}


def _matmul_tflops(dtype, n: int = 2048, repeats: int = 3) -> float:
    """This machine's dense matrix-multiply rate, to read the absolute timings against."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def _best(results):
    """The fastest round's time, the largest peak memory of all rounds."""
    best = dict(min(results, key=lambda r: r["seconds_per_image"]))
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    return best


def _package_tree(checkout: str) -> str:
    """A temporary directory in which ``import tag2text`` finds ``checkout``'s code (as setup.cfg maps it)."""
    root = tempfile.mkdtemp(prefix="tag2text-baseline-")
    for folder, target in PACKAGE_FOLDERS.items():
        source = os.path.join(checkout, folder)
        if not os.path.isdir(source):
            raise SystemExit(f"--baseline {checkout}: no {folder}/ folder (not a tag2text checkout)")
        shutil.copytree(source, os.path.join(root, "tag2text", target), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _spawn(name, batch_size, dtype, repeats, baseline_tree=None):
    code = (
        "import json, sys; sys.path.insert(0, %r); import inference as b; "
        "print(json.dumps(b._run_one(%r, %d, %r, %d)))" % (sys.path[0], name, batch_size, dtype, repeats)
    )
    env = dict(os.environ)
    if name == "baseline":  # first on sys.path, ahead of this checkout's (editable) install
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline_tree, env.get("PYTHONPATH")]))
        code = "import sys, tag2text; assert tag2text.__file__.startswith(%r), tag2text.__file__; " % baseline_tree + code
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{name} batch {batch_size} {dtype} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _print_ab(dtype, batch_size, this, baseline, names=("this", "baseline")):
    """Every round's seconds per image of both runs (the spread is the machine's noise) and the ratio of the
    best rounds."""
    this_s = [r["seconds_per_image"] for r in this]
    base_s = [r["seconds_per_image"] for r in baseline]
    same = all(a["tokens"] == b["tokens"] for a, b in zip(this, baseline))
    same_ids = all(a.get("ids") == b.get("ids") for a, b in zip(this, baseline))
    a, b = names
    print(f"A/B {dtype} batch {batch_size}: {a} {' '.join(f'{t:.3f}' for t in this_s)} s/img, "
          f"{b} {' '.join(f'{t:.3f}' for t in base_s)} s/img; best {a}/{b} {min(this_s) / min(base_s):.3f}, "
          f"peak MB {max(r['peak_rss_mb'] for r in this):.0f}/{max(r['peak_rss_mb'] for r in baseline):.0f}, "
          f"same token counts: {same}, same ids: {same_ids}", flush=True)


def _print_compiled(batch_size: int = 1, repeats: int = 2):
    """torch.compile (inductor) of the tagging path against eager, same process, after a warm-up compile."""
    import torch

    model = _build("tag2text")

    def tagging(pixel_values):
        return model.get_tag_logits(model.get_image_embeddings(pixel_values))

    pixel_values = torch.randn(batch_size, 3, 384, 384)
    compiled = torch.compile(tagging, backend="inductor")
    with torch.no_grad():
        start = time.perf_counter()
        compiled(pixel_values)
        compile_s = time.perf_counter() - start
        times, outputs = {"eager": [], "inductor": []}, {}
        for _ in range(repeats):
            for name, fn in (("eager", tagging), ("inductor", compiled)):
                start = time.perf_counter()
                outputs[name] = fn(pixel_values)
                times[name].append(time.perf_counter() - start)
    diff = float((outputs["inductor"] - outputs["eager"]).abs().max())
    print(f"tagging path batch {batch_size}: eager {min(times['eager']):.3f} s, inductor {min(times['inductor']):.3f} s "
          f"(first call with compilation {compile_s:.1f} s; max |logit difference| {diff:.1e})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "bfloat16-weights"],
                        choices=["float32", "bfloat16", "bfloat16-weights"],
                        help="bfloat16: fp32 weights under bf16 autocast; bfloat16-weights: the model cast to bf16")
    parser.add_argument("--repeats", type=int, default=2, help="timed generate calls per process (best kept)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per model, alternating the models")
    parser.add_argument("--baseline", metavar="DIR", help="also time Tag2Text from this checkout (e.g. main's)")
    parser.add_argument("--packing", action="store_true",
                        help="also time this checkout with packed CPU weights (tag2text.cpu_packing)")
    parser.add_argument("--no-blip", action="store_true", help="leave out BLIP (e.g. for a quick --baseline A/B)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) of tagging")
    args = parser.parse_args()
    baseline_tree = _package_tree(os.path.abspath(args.baseline)) if args.baseline else None
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul 2048x2048: "
          f"{_matmul_tflops(torch.float32):.2f} TFLOP/s float32, {_matmul_tflops(torch.bfloat16):.2f} TFLOP/s bfloat16")
    rows = []
    for dtype in args.dtypes:
        for batch_size in args.batch_sizes:
            # Rounds alternate the two models so that a slow spell of a shared machine hits both alike.
            names = (["tag2text"] + (["packed"] if args.packing else []) + (["baseline"] if baseline_tree else [])
                     + ([] if args.no_blip else ["blip"]))
            runs = {name: [] for name in names}
            for _ in range(args.rounds):
                for name in runs:
                    runs[name].append(_spawn(name, batch_size, dtype, args.repeats, baseline_tree))
            if baseline_tree:
                _print_ab(dtype, batch_size, runs["tag2text"], runs["baseline"])
            if args.packing:
                _print_ab(dtype, batch_size, runs["packed"], runs["tag2text"], ("packed", "as built"))
            if args.packing and baseline_tree:
                _print_ab(dtype, batch_size, runs["packed"], runs["baseline"], ("packed", "baseline"))
            if not args.no_blip:
                rows.append((dtype, batch_size, _best(runs["tag2text"]), _best(runs["blip"])))
    if args.compile:
        _print_compiled()
    if not rows:
        return
    header = f"{'dtype':16} {'batch':>5} {'tag2text s/img':>15} {'blip s/img':>11} {'ratio':>6} " \
             f"{'tag2text MB':>12} {'blip MB':>8} {'tokens':>7}"
    print(header)
    print("-" * len(header))
    for dtype, batch_size, t2t, blip in rows:
        ratio = t2t["seconds_per_image"] / blip["seconds_per_image"]
        print(f"{dtype:16} {batch_size:>5} {t2t['seconds_per_image']:>15.3f} {blip['seconds_per_image']:>11.3f} "
              f"{ratio:>6.2f} {t2t['peak_rss_mb']:>12.0f} {blip['peak_rss_mb']:>8.0f} "
              f"{t2t['tokens']}/{blip['tokens']:>3}")
    fp32 = {b: t for d, b, t, _ in rows if d == "float32"}
    for dtype, batch_size, t2t, _ in rows:
        if not dtype.startswith("bfloat16") or batch_size not in fp32:
            continue
        import numpy as np

        a, b = np.array(fp32[batch_size]["tag_probs"]), np.array(t2t["tag_probs"])
        at_threshold = ((a > 0.68) == (b > 0.68)).mean()
        median = np.median(a, axis=1, keepdims=True)
        at_median = ((a > median) == (b > median)).mean()
        print(f"{dtype} vs fp32 tag decisions, batch {batch_size}: {at_threshold:.4%} agree at 0.68 "
              f"({(a > 0.68).mean():.1%} positive), {at_median:.4%} at each image's median probability")


if __name__ == "__main__":
    main()
