"""RAM++ and RAM tagging speed at the released sizes: this library against the original code, same weights.

For each family, a random model at the released size (Swin-L 384, 4,585 tags; RAM++ with 51 description embeddings
per tag) is built BY THE ORIGINAL CODE (recognize-anything, run in its own virtual environment), its weights are
saved under the original key names and converted with ``tag2text convert`` (the released tag lists and thresholds
from the original's ``ram/data``), so both sides run the same weights. Random weights would tag nothing at the
released thresholds, so before saving: the label embeddings get unit-norm random rows, ``wordvec_proj`` std-1
weights (the default scale makes every label query alike) and ``fc.bias`` is shifted so that about 1.5% of the
tags of the first image are above 0.65.

Backends, each in its own process (a persistent worker fed over stdin, so models load once), timed on the same
384 px pixel values (synthetic images through this library's processor), batch 1 and 8, alternating in rounds
(the order rotates each round), best time of the rounds:

- ``original``: the original model's ``generate_tag`` (what ``inference_ram_plus`` / ``inference_ram`` call; they
  return only the first image's strings, ``generate_tag`` returns every image's), float32, ``torch.no_grad``;
- ``torch``: ``RamPlusForImageTagging.tag`` / ``RamForImageTagging.tag`` in float32;
- ``torch-packed``: the same after ``tag2text.cpu_packing.pack_cpu_weights`` (oneDNN-packed linear weights, float32);
- ``ort-fp32`` / ``ort-int8``: ``tag2text.onnx_ram.OnnxRamTagger`` on exports written by ``tag2text export``
  (and ``quantize_export``), onnxruntime CPU provider.

Tags are compared with the original's English strings, per image; the largest logit difference to the original
is printed too. Peak memory is each worker's resident high-water mark (VmHWM) during the timed calls of that
row (reset after loading; the model's weights are resident, so they count).

    python benchmarks/tagging.py --original-python /work/venvs/ram_orig/bin/python \\
        --original-code /work/ram_original [--families ram_plus ram] [--batch-sizes 1 8] [--rounds 2] \\
        [--backends original torch torch-packed ort-fp32 ort-int8] [--workdir DIR] [--keep]

A ``--workdir`` kept from an earlier run (``--keep``) is reused: the original rebuilds the same weights from the
seed, and the converted model and the exports found there are not made again (tags equal to the original's show
that the weights still match). ``--profile`` prints torch.profiler operator tables instead of timing.

``--original-python``: a Python with the original's requirements (torch, transformers 4.26, timm 0.4.12,
fairscale; a ``torchvision`` import stub is enough, nothing of it runs); ``--original-code``: a checkout of
xinyu1205/recognize-anything (the folder holding the ``ram`` package; its ``ram/data`` tag lists are used).
Disk: about 2 GB (RAM++) / 4 GB (RAM) of weights per family, plus ~1.5 GB of ONNX; memory: the original and
this library's model resident at once (about 3 GB for RAM++, 4 GB for RAM) plus the export (several GB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from process_memory import peak_rss_mb, reset_peak

REPO = Path(__file__).resolve().parents[1]
FIRE_THRESHOLD = 0.65  # the released threshold of most tags
FIRE_FRACTION = 0.015


_PROTOCOL = []  # a worker's answers go to its original stdout; anything else it prints goes to stderr


def _protect_stdout() -> None:
    _PROTOCOL.append(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def _reply(payload: dict) -> None:
    stream = _PROTOCOL[0] if _PROTOCOL else sys.stdout
    stream.write(json.dumps(payload) + "\n")
    stream.flush()


# -- workers (each in its own process) -------------------------------------------------------------------------


def _synthetic_vocab(directory: Path) -> Path:
    """A 30,522-entry WordPiece vocabulary with bert-base-uncased's special ids (the original builds a
    BertTokenizer from it; only the size and the special tokens matter, nothing is tokenized)."""
    directory.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(30522)]
    for index, token in ((0, "[PAD]"), (100, "[UNK]"), (101, "[CLS]"), (102, "[SEP]"), (103, "[MASK]")):
        words[index] = token
    (directory / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return directory


def worker_original(args) -> None:
    """Build the original model, randomise it (see the module docstring), save its weights, then time
    ``generate_tag`` on request."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.original_code)
    import ram.models  # noqa: F401  (``ram.models.ram`` the attribute is the factory function)

    module = sys.modules["ram.models.ram_plus" if args.family == "ram_plus" else "ram.models.ram"]
    model_class = module.RAM_plus if args.family == "ram_plus" else module.RAM
    workdir = Path(args.workdir)
    pixels = np.load(workdir / "pixels.npy")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = model_class(image_size=384, vit="swin_l", text_encoder_type=str(_synthetic_vocab(workdir / "vocab")))
    model.eval()
    build_s = time.perf_counter() - start
    logits_seen = []
    model.fc.register_forward_hook(lambda module, inputs, output: logits_seen.append(output.squeeze(-1)))
    generator = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        embed = torch.randn(model.label_embed.shape, generator=generator)
        model.label_embed.copy_(embed / embed.norm(dim=-1, keepdim=True))
        model.wordvec_proj.weight.copy_(torch.randn(model.wordvec_proj.weight.shape, generator=generator))
        model.generate_tag(torch.from_numpy(pixels[:1]))
        logits = logits_seen.pop()[0]
        target = float(np.log(FIRE_THRESHOLD / (1 - FIRE_THRESHOLD)))
        model.fc.bias += target - float(torch.quantile(logits, 1 - FIRE_FRACTION))
    from safetensors.torch import save_file

    if (workdir / "model" / "config.json").is_file():  # a kept --workdir: the converted copy is there already
        _serve(args, pixels, lambda batch: model.generate_tag(batch)[0], logits_seen, torch,
               {"build_s": round(build_s, 1)})
        return
    state, seen = {}, set()
    for key, value in model.state_dict().items():
        pointer = value.data_ptr()
        state[key] = value.clone() if pointer in seen else value.contiguous()  # safetensors refuses shared storage
        seen.add(pointer)
    save_file(state, str(workdir / "original.safetensors"))
    del state
    _serve(args, pixels, lambda batch: model.generate_tag(batch)[0], logits_seen, torch,
           {"build_s": round(build_s, 1)})


def _serve(args, pixels, call, logits_seen, torch, ready: dict) -> None:
    """Answer ``{"batch", "repeats"}`` lines with timings, tags and logits until stdin closes."""
    import numpy as np

    with torch.no_grad():
        call(torch.from_numpy(pixels[:1]))  # warm-up
    logits_seen.clear()
    _reply(dict(ready, ready=True))
    for line in sys.stdin:
        request = json.loads(line)
        batch = torch.from_numpy(np.ascontiguousarray(pixels[: request["batch"]]))
        if "packed" in request:
            _set_packed(request["packed"])
        if request.get("profile"):
            _reply({"profile": _profile(call, batch, torch, request.get("rows", 25))})
            continue
        reset_peak()
        times = []
        with torch.no_grad():
            for _ in range(request["repeats"]):
                logits_seen.clear()
                start = time.perf_counter()
                tags = call(batch)
                times.append(time.perf_counter() - start)
        logits = logits_seen[-1].float().numpy() if logits_seen else np.zeros(0)
        _reply({"seconds": times, "peak_rss_mb": round(peak_rss_mb()), "tags": tags,
                "logits": logits.round(6).tolist()})


def _profile(call, batch, torch, rows: int) -> str:
    """torch.profiler's operator table (self CPU time) of one call."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        call(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


_MODEL = {}


def _set_packed(packed: bool) -> None:
    from tag2text.cpu_packing import pack_cpu_weights, unpack_cpu_weights

    model = _MODEL["model"]
    (pack_cpu_weights if packed else unpack_cpu_weights)(model)
    with __import__("torch").no_grad():
        model.tag(__import__("torch").from_numpy(_MODEL["pixels"][:1]))  # packs (or drops) the weights once


def worker_torch(args) -> None:
    import numpy as np
    import torch

    from tag2text import RamForImageTagging, RamPlusForImageTagging

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    pixels = np.load(workdir / "pixels.npy")
    model_class = RamPlusForImageTagging if args.family == "ram_plus" else RamForImageTagging
    model = model_class.from_pretrained(workdir / "model").eval()
    _MODEL.update(model=model, pixels=pixels)
    logits_seen = []
    model.fc.register_forward_hook(lambda module, inputs, output: logits_seen.append(output.squeeze(-1)))
    _serve(args, pixels, lambda batch: [" | ".join(r.tags) for r in model.tag(batch)], logits_seen, torch, {})


def worker_onnx(args) -> None:
    import numpy as np
    import onnxruntime as ort

    from tag2text.onnx_ram import OnnxRamTagger

    workdir = Path(args.workdir)
    pixels = np.load(workdir / "pixels.npy")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    tagger = OnnxRamTagger.from_pretrained(workdir / args.worker.replace("ort-", "onnx-"), session_options=options)
    logits_seen = []
    session_run = tagger.session.run

    def run(names, feed):
        outputs = session_run(names, feed)
        logits_seen.append(_Array(outputs[0]))
        return outputs

    tagger.session = type("Session", (), {"run": staticmethod(run)})()

    class _NoGrad:
        @staticmethod
        def no_grad():
            import contextlib
            return contextlib.nullcontext()

        @staticmethod
        def from_numpy(array):
            return array

    _serve(args, pixels, lambda batch: [" | ".join(r.tags) for r in tagger.tag(pixel_values=batch)], logits_seen,
           _NoGrad, {})


class _Array:
    """A numpy array answering ``.float().numpy()`` as the torch tensors of the other workers."""

    def __init__(self, array):
        self.array = array

    def float(self):
        return self

    def numpy(self):
        return self.array


def worker_export(args) -> None:
    """``tag2text export`` (or the int8 copy) in this process, reporting its time and peak memory."""
    workdir = Path(args.workdir)
    start = time.perf_counter()
    if args.worker == "export-int8":
        from tag2text.hub.onnx_export import quantize_export

        report = quantize_export(workdir / "onnx-fp32", workdir / "onnx-int8")
    else:
        from tag2text.hub.onnx_export_ram import export_ram_onnx

        report = export_ram_onnx(workdir / "model", workdir / "onnx-fp32")
    _reply({"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_rss_mb()),
            "size_mb": round(sum(report.files.values()) / 1e6)})


# -- driver ----------------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, python, args, worker, family, workdir):
        command = [python, str(Path(__file__).resolve()), "--worker", worker, "--family", family,
                   "--workdir", str(workdir), "--threads", str(args.threads), "--seed", str(args.seed)]
        if worker == "original":
            command += ["--original-code", str(Path(args.original_code).resolve())]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
        self.name = worker
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=str(REPO))
        self.ready = None

    def wait_ready(self) -> dict:
        if self.ready is None:
            self.ready = self._read()
        return self.ready

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited with status {self.process.wait()}")
        return json.loads(line)

    def ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=120)


def _run_once(args, worker: str, family: str, workdir: Path) -> dict:
    process = Worker(sys.executable, args, worker, family, workdir)
    try:
        return process._read()
    finally:
        process.close()


def _pixels(workdir: Path, count: int) -> None:
    """Synthetic photos-like images (smooth colour fields with shapes and noise) through the processor."""
    import numpy as np
    from PIL import Image, ImageDraw

    from tag2text import Tag2TextImageProcessor

    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        y, x = np.mgrid[0:480, 0:640] / 480.0
        base = np.stack([np.sin(x * rng.uniform(1, 6) + rng.uniform(0, 6)) for _ in range(3)], -1)
        array = ((base * 0.5 + 0.5) * 200 + rng.normal(0, 12, (480, 640, 3))).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(array)
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.integers(0, 560), rng.integers(0, 400)
            draw.ellipse([x0, y0, x0 + rng.integers(30, 200), y0 + rng.integers(30, 200)],
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        images.append(image)
    processor = Tag2TextImageProcessor(size=384)
    np.save(workdir / "pixels.npy", processor(images=images, return_tensors="np")["pixel_values"].astype(np.float32))


def _convert(args, workdir: Path) -> None:
    data = Path(args.original_code) / "ram" / "data"
    command = [sys.executable, "-c", "import sys; from tag2text.hub.cli import main; sys.exit(main())",
               "--log-level", "WARNING", "convert", "--checkpoint", str(workdir / "original.safetensors"),
               "--tag-list", str(data / "ram_tag_list.txt"), "--tag-list-chinese",
               str(data / "ram_tag_list_chinese.txt"), "--threshold-file", str(data / "ram_tag_list_threshold.txt"),
               "--output-dir", str(workdir / "model")]
    subprocess.run(command, check=True, cwd=str(REPO), env=dict(os.environ, HF_HUB_OFFLINE="1"))


def _load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def bench_family(args, family: str, root: Path) -> list[dict]:
    workdir = root / family
    workdir.mkdir(parents=True, exist_ok=True)
    _pixels(workdir, max(args.batch_sizes))
    notes = {}
    original = Worker(args.original_python, args, "original", family, workdir)
    workers = {"original": original}
    try:
        notes["original_build_s"] = original.wait_ready()["build_s"]
        if not (workdir / "model" / "config.json").is_file():  # a kept --workdir reuses its converted model
            start = time.perf_counter()
            _convert(args, workdir)
            notes["convert_s"] = round(time.perf_counter() - start, 1)
            (workdir / "original.safetensors").unlink()
        backends = list(args.backends)
        if any(b.startswith("ort-") for b in backends) and not (workdir / "onnx-fp32" / "tagger.onnx").is_file():
            notes["export_fp32"] = _run_once(args, "export-fp32", family, workdir)
            print(f"[{family}] export float32: {notes['export_fp32']} (load {_load_average()})", flush=True)
        if "ort-int8" in backends and not (workdir / "onnx-int8" / "tagger.onnx").is_file():
            notes["export_int8"] = _run_once(args, "export-int8", family, workdir)
            print(f"[{family}] int8 copy: {notes['export_int8']}", flush=True)
        torch_worker = None
        for backend in backends:
            if backend == "original":
                continue
            if backend in ("torch", "torch-packed"):
                if torch_worker is None:
                    torch_worker = workers[backend] = Worker(sys.executable, args, "torch", family, workdir)
                workers[backend] = torch_worker
            else:
                workers[backend] = Worker(sys.executable, args, backend, family, workdir)
        for worker in set(workers.values()):
            worker.wait_ready()
        results = {}
        for round_index in range(args.rounds):
            order = backends[round_index % len(backends):] + backends[: round_index % len(backends)]
            for batch in args.batch_sizes:
                for backend in order:
                    request = {"batch": batch, "repeats": args.repeats}
                    if backend in ("torch", "torch-packed"):
                        request["packed"] = backend == "torch-packed"
                    answer = workers[backend].ask(request)
                    entry = results.setdefault((backend, batch), {"times": [], "peak": 0})
                    entry["times"] += answer["seconds"]
                    entry["peak"] = max(entry["peak"], answer["peak_rss_mb"])
                    entry["tags"], entry["logits"] = answer["tags"], answer["logits"]
                    print(f"[{family}] round {round_index + 1} batch {batch} {backend}: "
                          f"{[round(t, 2) for t in answer['seconds']]} s (load {_load_average()})", flush=True)
    finally:
        for worker in set(workers.values()):
            worker.close()
    import numpy as np

    rows = []
    for (backend, batch), entry in results.items():
        reference = results[("original", batch)] if ("original", batch) in results else None
        best = min(entry["times"])
        row = {"family": family, "backend": backend, "batch": batch, "images_per_s": batch / best,
               "best_s": best, "peak_rss_mb": entry["peak"], "tags_identical": None, "max_logit_diff": None,
               "tags_per_image": float(np.mean([len(t.split(" | ")) if t else 0 for t in entry["tags"]]))}
        if reference is not None:
            row["tags_identical"] = sum(a == b for a, b in zip(entry["tags"], reference["tags"]))
            row["max_logit_diff"] = float(np.abs(np.asarray(entry["logits"]) -
                                                 np.asarray(reference["logits"])).max())
            row["speedup"] = row["images_per_s"] / (batch / min(reference["times"]))
        rows.append(row)
    print(f"[{family}] notes: {json.dumps(notes)}", flush=True)
    return rows


def profile_main(args) -> int:
    """Top operators by self CPU time of one call per backend, on the weights of a kept --workdir."""
    for family in args.families:
        workdir = Path(args.workdir) / family
        for backend in args.backends:
            if backend.startswith("ort-"):
                continue
            python = args.original_python if backend == "original" else sys.executable
            worker = Worker(python, args, "original" if backend == "original" else "torch", family, workdir)
            try:
                worker.wait_ready()
                request = {"batch": args.batch_sizes[0], "profile": True}
                if backend != "original":
                    request["packed"] = backend == "torch-packed"
                table = worker.ask(request)["profile"]
            finally:
                worker.close()
            print(f"\n== {family} {backend} batch {args.batch_sizes[0]} (load {_load_average()})\n{table}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original-python", help="Python of a virtual environment that runs the original code")
    parser.add_argument("--original-code", help="checkout of xinyu1205/recognize-anything (holds the ram package)")
    parser.add_argument("--families", nargs="+", choices=["ram_plus", "ram"], default=["ram_plus", "ram"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per request")
    parser.add_argument("--backends", nargs="+", default=["original", "torch", "torch-packed", "ort-fp32", "ort-int8"],
                        choices=["original", "torch", "torch-packed", "ort-fp32", "ort-int8"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder (removed unless --keep)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--profile", action="store_true",
                        help="with a kept --workdir of an earlier run: torch.profiler tables of --backends (original, "
                             "torch, torch-packed) at the first of --batch-sizes, instead of timing")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--family", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _protect_stdout()
        {"original": worker_original, "torch": worker_torch, "ort-fp32": worker_onnx, "ort-int8": worker_onnx,
         "export-fp32": worker_export, "export-int8": worker_export}[args.worker](args)
        return 0
    if "original" in args.backends:
        for option, value in (("--original-python", args.original_python), ("--original-code", args.original_code)):
            if not value:
                parser.error(f"{option} is required with the original backend")
        if not (Path(args.original_code) / "ram" / "models" / "ram_plus.py").is_file():
            parser.error(f"--original-code {args.original_code}: no ram/models/ram_plus.py there")
    if args.profile:
        return profile_main(args)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="tag2text-tagging-bench-"))
    print(f"load average at start: {_load_average()}; {os.cpu_count()} CPUs; threads {args.threads}", flush=True)
    rows = []
    try:
        for family in args.families:
            rows += bench_family(args, family, root)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nload average at end: {_load_average()}")
    print("| model | backend | batch | images/s | vs original | peak RSS (MB) | tags = original | max logit diff |")
    print("|---|---|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["family"], r["batch"], r["backend"] != "original", r["backend"])):
        same = "" if row["tags_identical"] is None else f"{row['tags_identical']}/{row['batch']}"
        diff = "" if row["max_logit_diff"] is None else f"{row['max_logit_diff']:.1e}"
        speed = f"{row['speedup']:.2f}x" if "speedup" in row else ""
        name = {"ram_plus": "RAM++", "ram": "RAM"}[row["family"]]
        print(f"| {name} | {row['backend']} | {row['batch']} | {row['images_per_s']:.3f} | {speed} | "
              f"{row['peak_rss_mb']} | {same} | {diff} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
