"""ONNX export at the released sizes: export cost, file sizes, int8 agreement, and CPU speed against PyTorch.

A random model at the released sizes (Swin-B 384, 3,429 tags, 12-layer BERT-base encoder and decoder; tag biases
spread so that some tags fire, as with trained weights) is saved with a synthetic 30,522-word WordPiece vocabulary
(the real one needs the network; only its size matters), then exported twice (float32 and ``--quantize int8``).
Three backends then tag and caption the same 384 px inputs, beam 3 and exactly 30 tokens (min = max length),
at batch 1 and 8, alternating in rounds, each run in a fresh process so that its peak resident memory
(VmHWM) is its own:

- ``torch``: Tag2TextForCaptioning.generate in float32, the project's fastest CPU path (packed oneDNN linears);
- ``ort-fp32`` / ``ort-int8``: tag2text.onnx.OnnxTag2Text on onnxruntime's CPU provider.

Each timed call returns tags and caption (one tagger pass). Per-graph times of onnxruntime (tagger, encoder,
decoder steps) and of PyTorch (vision tower + tag head, the rest) are printed to explain the ratios, and so are
the float32 matrix-product rates of both runtimes at the tagger's largest shapes.

    python benchmarks/export.py [--workdir DIR] [--keep] [--batch-sizes 1 8] [--rounds 2] [--repeats 1]
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

from process_memory import peak_rss_mb, reset_peak

REPO = Path(__file__).resolve().parents[1]
RELEASED_THRESHOLD = 0.68
TOKENS = 30


# -- stages (each in its own process) -------------------------------------------------------------------------


def stage_build(workdir: Path) -> dict:
    import numpy as np
    import torch

    from tag2text import (Tag2TextForCaptioning, Tag2TextImageProcessor, Tag2TextProcessor, build_tokenizer,
                          preset_config)

    special = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["a", "picture", "of", "|"] + [f"tag{i}" for i in range(30522)]
    vocab = workdir / "vocab.txt"
    vocab.write_text("\n".join((special + words)[:30522]) + "\n")
    tokenizer = build_tokenizer(vocab)
    config = preset_config("tag2text-swin-b-384", tokenizer=tokenizer, tag_names=[f"tag{i}" for i in range(3429)])
    torch.manual_seed(0)
    model = Tag2TextForCaptioning(config).eval()
    with torch.no_grad():
        model.tagging_head.classifier_bias.copy_(torch.linspace(-4, 4, config.num_tags))
    processor = Tag2TextProcessor(image_processor=Tag2TextImageProcessor(size=384), tokenizer=tokenizer)
    model.save_pretrained(workdir / "model")
    processor.save_pretrained(workdir / "model")
    pixels = np.random.default_rng(0).standard_normal((8, 3, 384, 384)).astype(np.float32)
    np.save(workdir / "pixels.npy", pixels)
    return {"parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def stage_export(workdir: Path, quantize: str | None) -> dict:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from tag2text.hub import export_onnx

    from tag2text.hub import quantize_export

    start = time.perf_counter()
    if quantize:  # the same graphs as `export --quantize int8`, quantized from the float32 export
        report = quantize_export(workdir / "onnx-fp32", workdir / "onnx-int8")
    else:
        report = export_onnx(workdir / "model", workdir / "onnx-fp32", progress=False)
    return {"export_s": round(time.perf_counter() - start, 1), "export_peak_rss_mb": round(peak_rss_mb()),
            "files_mb": {k: round(v / 1e6, 1) for k, v in report.files.items()}}


class _Timed:
    """Wraps an onnxruntime session and adds up its run time."""

    def __init__(self, session, totals, name):
        self.session, self.totals, self.name = session, totals, name

    def run(self, names, feed):
        start = time.perf_counter()
        try:
            return self.session.run(names, feed)
        finally:
            self.totals[self.name] = self.totals.get(self.name, 0.0) + time.perf_counter() - start


def stage_time(workdir: Path, backend: str, batch_size: int, repeats: int) -> dict:
    import numpy as np

    pixels = np.load(workdir / "pixels.npy")[:batch_size]
    kwargs = dict(num_beams=3, max_length=4 + TOKENS, min_length=4 + TOKENS)
    parts = {}
    times = []
    if backend == "torch":
        import torch

        from tag2text import Tag2TextForCaptioning
        from tag2text.cpu_packing import pack_cpu_weights

        # The CLI's CPU path: packing is opt-in in the library, and caption/annotate/serve turn it on.
        model = pack_cpu_weights(Tag2TextForCaptioning.from_pretrained(workdir / "model").eval())
        tensor = torch.from_numpy(pixels)
        with torch.no_grad():
            model.generate(tensor[:1], num_beams=1, max_length=6, min_length=6)  # warm-up (packs the weights)
            reset_peak()
            for _ in range(repeats):
                start = time.perf_counter()
                out = model.generate(tensor, return_dict_in_generate=True, **kwargs)
                times.append(time.perf_counter() - start)
            start = time.perf_counter()
            logits = model.get_tag_logits(model.get_image_embeddings(tensor))
            parts["tagger"] = time.perf_counter() - start
        sequences, tags = out.sequences.numpy(), out["tags"]
        logits = logits.numpy()
    else:
        from tag2text.onnx import OnnxTag2Text

        model = OnnxTag2Text.from_pretrained(workdir / ("onnx-int8" if backend == "ort-int8" else "onnx-fp32"))
        model.generate(pixel_values=pixels[:1], num_beams=1, max_length=6, min_length=6)
        reset_peak()
        totals = {}
        for name in list(model.sessions):
            model.sessions[name] = _Timed(model.sessions[name], totals, name)
        for _ in range(repeats):
            totals.clear()
            start = time.perf_counter()
            out = model.generate(pixel_values=pixels, return_dict=True, **kwargs)
            times.append(time.perf_counter() - start)
            parts = dict(totals)
        sequences, tags = out["sequences"], out["tags"]
        logits = out["tag_logits"]
    best = min(times)
    return {"seconds_per_image": best / batch_size, "all_seconds": [round(t, 2) for t in times],
            "peak_rss_mb": round(peak_rss_mb()), "tokens": int(sequences.shape[1]),
            "parts_s": {k: round(v, 2) for k, v in parts.items()}, "sequences": sequences.tolist(),
            "tags": tags, "logits": logits.tolist()}


# The tagger's largest products at batch 8 (rows, in, out): Swin-B stage 3 (18 of 24 blocks) and the tag head.
GEMM_SHAPES = {"swin stage 3 qkv": (8 * 576, 512, 1536), "swin stage 3 fc1": (8 * 576, 512, 2048),
               "swin stage 3 fc2": (8 * 576, 2048, 512), "tag head fc1": (8 * 3429, 768, 3072),
               "tag head fc2": (8 * 3429, 3072, 768)}


def stage_gemm(rounds: int = 3) -> dict:
    """The same float32 products on both runtimes: onnxruntime's MatMul with a constant weight (what the exported
    linear layers are) against torch's ``nn.Linear``, alternating, best of ``rounds``. TFLOP/s per shape."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    results = {}
    for name, (rows, inner, outer) in GEMM_SHAPES.items():
        weight = (rng.standard_normal((inner, outer)) * 0.02).astype(np.float32)
        inputs = rng.standard_normal((rows, inner)).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", inner])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", outer])],
            [numpy_helper.from_array(weight, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        linear = torch.nn.Linear(inner, outer, bias=False)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight.T.copy()))
        tensor = torch.from_numpy(inputs)
        times = {"ort": [], "torch": []}
        with torch.no_grad():
            session.run(None, {"x": inputs})
            linear(tensor)
            for _ in range(rounds):
                start = time.perf_counter()
                session.run(None, {"x": inputs})
                times["ort"].append(time.perf_counter() - start)
                start = time.perf_counter()
                linear(tensor)
                times["torch"].append(time.perf_counter() - start)
        flops = 2 * rows * inner * outer
        results[name] = {k: round(flops / min(v) / 1e12, 3) for k, v in times.items()}
    return results


def _spawn(workdir: Path, stage: str, *extra) -> dict:
    command = [sys.executable, __file__, "--workdir", str(workdir), "--stage", stage, *map(str, extra)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"stage {stage} {extra} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _agreement(a, b) -> float:
    import numpy as np

    prob = lambda x: 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))  # noqa: E731
    return float(((prob(a) > RELEASED_THRESHOLD) == (prob(b) > RELEASED_THRESHOLD)).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the 1.7 GB model and the exports go")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per backend, alternating")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per process (best kept)")
    parser.add_argument("--backends", nargs="+", default=["torch", "ort-fp32", "ort-int8"],
                        choices=["torch", "ort-fp32", "ort-int8"])
    parser.add_argument("--stage", default="all", help=argparse.SUPPRESS)
    parser.add_argument("stage_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tag2text-onnx-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.stage == "build":
        print(json.dumps(stage_build(workdir)))
        return 0
    if args.stage == "export":
        print(json.dumps(stage_export(workdir, args.stage_args[0] if args.stage_args[0] != "none" else None)))
        return 0
    if args.stage == "gemm":
        print(json.dumps(stage_gemm()))
        return 0
    if args.stage == "time":
        backend, batch, repeats = args.stage_args
        print(json.dumps(stage_time(workdir, backend, int(batch), int(repeats))))
        return 0

    from tqdm.auto import tqdm

    try:
        summary = {}
        if not (workdir / "model" / "config.json").is_file():
            summary["build"] = _spawn(workdir, "build")
        for quantize in ("none", "int8"):
            name = "onnx-int8" if quantize == "int8" else "onnx-fp32"
            if not (workdir / name / "onnx_config.json").is_file():
                summary[f"export_{quantize}"] = _spawn(workdir, "export", quantize)
        print(json.dumps(summary, indent=1))
        runs = {(b, n): [] for b in args.batch_sizes for n in args.backends}
        jobs = [(b, n) for b in args.batch_sizes for _ in range(args.rounds) for n in args.backends]
        for batch, backend in tqdm(jobs, desc="timing", unit="run"):
            runs[(batch, backend)].append(_spawn(workdir, "time", backend, batch, args.repeats))
        header = (f"{'backend':9} {'batch':>5} {'s/img':>7} {'ratio':>6} {'runs s/img':>16} {'peak MB':>8}"
                  "  parts (s per call)")
        print(header)
        print("-" * len(header))
        for batch in args.batch_sizes:
            torch_runs = runs.get((batch, "torch"), [])
            base = min(r["seconds_per_image"] for r in torch_runs) if torch_runs else None
            for backend in args.backends:
                results = runs[(batch, backend)]
                best = min(results, key=lambda r: r["seconds_per_image"])
                spread = "/".join(f"{r['seconds_per_image']:.2f}" for r in results)
                ratio = best["seconds_per_image"] / base if base else float("nan")
                print(f"{backend:9} {batch:>5} {best['seconds_per_image']:>7.3f} {ratio:>6.2f} {spread:>16} "
                      f"{max(r['peak_rss_mb'] for r in results):>8}  {best['parts_s']}")
        for batch in args.batch_sizes:
            reference = runs.get((batch, "torch")) or runs.get((batch, "ort-fp32"))
            for backend in args.backends:
                other = runs[(batch, backend)][0]
                same_ids = other["sequences"] == reference[0]["sequences"]
                print(f"batch {batch} {backend} vs {('torch' if runs.get((batch, 'torch')) else 'ort-fp32')}: "
                      f"tag decisions agree {_agreement(other['logits'], reference[0]['logits']):.4%} at "
                      f"{RELEASED_THRESHOLD}; same tags {other['tags'] == reference[0]['tags']}; "
                      f"same token ids {same_ids}")
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(workdir / "onnx-fp32" / "tokenizer.json"))
        batch = max(args.batch_sizes)
        for backend in args.backends:
            rows = runs[(batch, backend)][0]["sequences"][:3]
            print(f"captions ({backend}, batch {batch}, first 3):",
                  [tokenizer.decode(row, skip_special_tokens=True)[:80] for row in rows])
        gemm = _spawn(workdir, "gemm")
        print("float32 products at batch 8, TFLOP/s (best of 3, alternating): what the tagger's time rests on")
        for name, rates in gemm.items():
            print(f"  {name:18} onnxruntime {rates['ort']:.3f}  torch {rates['torch']:.3f}  "
                  f"ratio {rates['ort'] / rates['torch']:.2f}")
        sizes = {}
        for name in ("onnx-fp32", "onnx-int8"):
            sizes[name] = {p.name: round(p.stat().st_size / 1e6, 1) for p in sorted((workdir / name).glob("*.onnx"))}
        sizes["model.safetensors"] = round((workdir / "model" / "model.safetensors").stat().st_size / 1e6, 1)
        print("file sizes (MB):", json.dumps(sizes))
        print(f"summary: {len(jobs)} timed runs at batch sizes {args.batch_sizes}, {TOKENS} tokens, beam 3")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
