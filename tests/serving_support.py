"""A real uvicorn server on 127.0.0.1 (a free port chosen by the OS) around a tiny model, for the serve tests."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import tiny_factory
import torch
import uvicorn
from PIL import Image

from tag2text.hub.serving_api import build_app
from tag2text.hub.serving_model import ServingModel
from tag2text.hub.serving_service import TaggingService


def responsive_model(tokenizer, seed=0):
    """A tiny model whose captions depend on the image and the tags.

    At the BERT initialisation (std 0.02) the decoder's cross-attention barely reaches the logits, so a random
    tiny model writes the same caption for every image, and a test could not see a batch mixing up its rows.
    Scaling the cross-attention value and output projections by 8 makes the captions differ (measured: 6
    distinct captions for 8 :func:`scene` images).
    """
    model = tiny_factory.make_model(tiny_factory.make_config(tokenizer), seed=seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "crossattention" in name and name.endswith("weight") and ("value" in name or "output.dense" in name):
                param.mul_(8.0)
    return model


def scene(seed, size=(48, 40)) -> Image.Image:
    """A flat background with a rectangle, colours drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:] = rng.integers(0, 256, 3)
    array[size[1] // 4 : 3 * size[1] // 4, size[0] // 4 : 3 * size[0] // 4] = rng.integers(0, 256, 3)
    return Image.fromarray(array)


class RunningServer:
    """``with RunningServer(model, processor, ...) as server:`` serves until the block ends."""

    def __init__(self, model, processor, demo=False, max_batch_size=8, batch_timeout_s=0.02,
                 max_image_pixels=100_000):
        self.service = TaggingService(ServingModel(model, processor, name="tiny-test-model"),
                                      max_batch_size=max_batch_size, batch_timeout_s=batch_timeout_s,
                                      max_image_pixels=max_image_pixels)
        self.app = build_app(self.service, demo=demo)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.service.close()
        self.sock.close()


def request(url, data=None, headers=None, method=None, timeout=120):
    """(status, parsed JSON) of one HTTP request; 4xx/5xx answers are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def multipart(fields: dict, files: dict) -> tuple[bytes, dict]:
    """A multipart/form-data body: ``fields`` name -> text (or list of texts), ``files`` name -> bytes."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, values in fields.items():
        for value in values if isinstance(values, list) else [values]:
            out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode())
    for name, content in files.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"upload.bin\"\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_image(url, image_bytes, **fields):
    body, headers = multipart(fields, {"image": image_bytes})
    return request(url, body, headers)


def post_json(url, payload):
    return request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
