"""Load test of ``tag2text serve`` on loopback: requests per second and latency, dynamic batching on and off.

For each model size a child process builds the model (random weights, nothing downloaded) and serves it twice
on 127.0.0.1, through the real FastAPI app and uvicorn: once with dynamic batching (``--max-batch-size``,
``--batch-timeout-ms``) and once without (batch size 1), sharing the same weights. This process then sends
a fixed number of ``POST /v1/caption`` requests (multipart PNG uploads) from concurrent clients to each, and
reports requests per second, p50/p95 latency, failed and lost requests and the server's own batch counters.

Sizes: ``tiny`` (the test preset, 32 px), ``quickstart`` (the architecture ``tag2text quickstart`` trains,
64 px) and ``released`` (Swin-B 384, 3,429 tags, BERT-base encoder and decoder; building it takes ~2 GB).

    python benchmarks/serve.py [--models tiny quickstart released] [--requests 200 200 24] [--clients 16]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid

SIZES = ("tiny", "quickstart", "released")
WORDS = ["|", ",", ".", "a", "picture", "of", "the", "on", "in", "with", "and", "red", "blue", "green", "yellow",
         "black", "white", "small", "large", "circle", "square", "triangle", "star", "left", "right", "top",
         "bottom", "middle", "cat", "dog", "car", "tree", "sky", "grass", "##s"]


# -- child: build a model and serve it twice ---------------------------------------------------------------------

def _tokenizer(directory: str, vocab_size: int):
    from tag2text import build_tokenizer

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    filler = [f"w{i}" for i in range(max(vocab_size - len(special) - len(WORDS), 0))]
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(special + WORDS + filler) + "\n")
    return build_tokenizer(path)


def _build(size: str, directory: str):
    import torch

    from tag2text import Tag2TextConfig, Tag2TextForCaptioning, Tag2TextImageProcessor, Tag2TextProcessor, preset_config

    torch.manual_seed(0)
    if size == "released":
        # BERT's 30,522 words plus [DEC] and [ENC], as the converted released model.
        tokenizer = _tokenizer(directory, 30522)
        config = preset_config("tag2text-swin-b-384", tokenizer=tokenizer)
    else:
        tokenizer = _tokenizer(directory, 0)
        tags = [w for w in WORDS if w.isalpha()]
        if size == "tiny":
            config = preset_config("tiny", tokenizer=tokenizer, tag_names=tags)
        else:
            from tag2text.training.quickstart import QUICKSTART_ARCHITECTURE

            values = json.loads(json.dumps(QUICKSTART_ARCHITECTURE))
            values["text_config"].update(
                vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
                bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"),
                enc_token_id=tokenizer.convert_tokens_to_ids("[ENC]"))
            config = Tag2TextConfig(tag_names=tags, **values)
            config.set_tag_vocabulary(tokenizer=tokenizer)
    model = Tag2TextForCaptioning(config).eval()
    with torch.no_grad():  # spread tag probabilities so that some tags fire, as with trained weights
        model.tagging_head.classifier_bias.copy_(torch.linspace(-4, 4, config.num_tags))
    processor = Tag2TextProcessor(
        image_processor=Tag2TextImageProcessor(size=int(config.vision_config.image_size)), tokenizer=tokenizer,
        prompt=config.prompt, max_tag_length=config.max_tag_length, tag_separator=config.tag_separator)
    return model, processor


def _serve_child(size: str, max_batch_size: int, timeout_ms: float, threads: int | None) -> None:
    import socket
    import tempfile

    import torch
    import uvicorn

    from tag2text.hub.serving_api import build_app
    from tag2text.hub.serving_model import ServingModel
    from tag2text.hub.serving_service import TaggingService

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as directory:
        model, processor = _build(size, directory)
    serving_model = ServingModel(model, processor, name=f"{size} (random weights)")
    servers, ports, services = [], {}, []
    for mode, batch in (("on", max_batch_size), ("off", 1)):
        service = TaggingService(serving_model, max_batch_size=batch, batch_timeout_s=timeout_ms / 1000.0)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(build_app(service, demo=False), log_level="warning"))
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        servers.append(server)
        services.append(service)
        ports[mode] = sock.getsockname()[1]
    print(json.dumps({"ports": ports, "image_size": processor.image_processor.size, "threads": torch.get_num_threads(),
                      "parameters": sum(p.numel() for p in model.parameters())}), flush=True)
    sys.stdin.read()  # the parent closes our stdin when it is done
    for server in servers:
        server.should_exit = True
    for service in services:
        service.close()


# -- parent: the clients -------------------------------------------------------------------------------------------

def _images(side: int, count: int = 8) -> list[bytes]:
    import numpy as np
    from PIL import Image

    encoded = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        array = np.zeros((side, side, 3), dtype=np.uint8)
        array[:] = rng.integers(0, 256, 3)
        array[side // 4 : 3 * side // 4, side // 3 : 2 * side // 3] = rng.integers(0, 256, 3)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def _body(image: bytes, fields: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
                 "Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _get(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("GET", path)
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return answer


def _load(port: int, bodies: list, total: int, clients: int, seconds: float | None = None) -> dict:
    """Up to ``total`` requests from ``clients`` threads, each on its own keep-alive connection; after
    ``seconds`` no new request is sent (those in flight are still awaited and counted)."""
    latencies, failures, lock = [], [], threading.Lock()
    next_index = iter(range(total))
    sent = [0]
    deadline = time.perf_counter() + seconds if seconds else float("inf")

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                index = next(next_index, None) if time.perf_counter() < deadline else None
                sent[0] += index is not None
            if index is None:
                break
            body, content_type = bodies[index % len(bodies)]
            started = time.perf_counter()
            try:
                connection.request("POST", "/v1/caption", body, {"Content-Type": content_type})
                response = connection.getresponse()
                answer = json.loads(response.read())
                ok = response.status == 200 and isinstance(answer.get("caption"), str)
            except (OSError, http.client.HTTPException, ValueError) as error:
                ok, answer = False, {"error": repr(error)}
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            elapsed = time.perf_counter() - started
            with lock:
                (latencies if ok else failures).append(elapsed if ok else answer)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()

    def percentile(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"wall_s": wall, "sent": sent[0], "ok": len(latencies), "failed": len(failures),
            "lost": sent[0] - len(latencies) - len(failures),
            "rps": len(latencies) / wall, "p50_ms": percentile(0.50), "p95_ms": percentile(0.95),
            "first_failure": failures[0] if failures else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--requests", type=int, nargs="+", default=None,
                        help="requests per model and mode, in --models order (default: 200 200 24)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds-per-run", type=float, default=10.0,
                        help="stop sending new requests after this long (0: send all); keeps the test near a minute")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout-ms", type=float, default=20.0)
    parser.add_argument("--num-beams", type=int, default=None, help="default: the model's (3)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's (26)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the server (tag2text serve --threads); default: torch's choice")
    parser.add_argument("--serve-child", choices=SIZES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        _serve_child(args.serve_child, args.max_batch_size, args.batch_timeout_ms, args.threads)
        return 0
    defaults = {"tiny": 200, "quickstart": 200, "released": 24}
    counts = args.requests or [defaults[m] for m in args.models]
    if len(counts) != len(args.models):
        parser.error(f"--requests takes one count per model ({len(args.models)}), got {len(counts)}")
    fields = {k: v for k, v in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens)) if v}

    load_before = os.getloadavg()
    rows = []
    for size, total in zip(args.models, counts):
        child = subprocess.Popen([sys.executable, __file__, "--serve-child", size, "--max-batch-size",
                                  str(args.max_batch_size), "--batch-timeout-ms", str(args.batch_timeout_ms)]
                                 + (["--threads", str(args.threads)] if args.threads else []),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            started = json.loads(child.stdout.readline())
            bodies = [_body(image, fields) for image in _images(max(started["image_size"], 64))]
            for mode in ("on", "off"):
                port = started["ports"][mode]
                _load(port, bodies, min(4, total), min(4, args.clients))  # warm-up, not counted
                before = _get(port, "/v1/stats")
                result = _load(port, bodies, total, args.clients, args.seconds_per_run)
                after = _get(port, "/v1/stats")
                batches = after["batches"] - before["batches"]
                served = after["requests"] - before["requests"]
                rows.append({"model": size, "parameters": started["parameters"], "threads": started["threads"],
                             "batching": mode, "requests": total,
                             **result, "batches": batches, "mean_batch": served / batches if batches else 0.0,
                             "largest_batch": after["largest_batch"]})
                print(f"{size} batching {mode}: {result['ok']}/{result['sent']} answered, {result['rps']:.2f} req/s, p50 {result['p50_ms']:.0f} ms, "
                      f"p95 {result['p95_ms']:.0f} ms, {result['failed']} failed, {result['lost']} lost", flush=True)
        finally:
            child.stdin.close()
            child.wait(timeout=120)

    print(f"\n{args.clients} concurrent clients, batching on = --max-batch-size {args.max_batch_size} "
          f"--batch-timeout-ms {args.batch_timeout_ms:g}, off = batch size 1; options {fields or 'model defaults'}; "
          f"at most {counts} requests and {args.seconds_per_run:g} s of sending per run; "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print("| model | params | threads | batching | sent | wall s | req/s | p50 ms | p95 ms | failed | lost | "
          "mean batch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['parameters'] / 1e6:.1f}M | {row['threads']} | {row['batching']} | {row['sent']} | "
              f"{row['wall_s']:.1f} | {row['rps']:.2f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | "
              f"{row['failed']} | {row['lost']} | {row['mean_batch']:.2f} |")
    bad = sum(row["failed"] + row["lost"] for row in rows)
    for row in rows:
        if row["first_failure"]:
            print(f"first failure ({row['model']}, batching {row['batching']}): {row['first_failure']}")
    print(f"\n{len(rows)} runs, {sum(row['ok'] for row in rows)} of {sum(row['sent'] for row in rows)} requests "
          f"answered, {bad} failed or lost")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
