"""``tag2text serve``: the web demo and an HTTP API with dynamic batching, for one model loaded once.

``GET /`` is the Gradio demo, ``POST /v1/caption`` and ``POST /v1/tags`` the API, ``GET /health`` and
``GET /v1/stats`` the state and the batching counters (see :mod:`tag2text.hub.serving_api`). Needs the
``serve`` extra: ``pip install "tag2text[serve]"``.
"""

from __future__ import annotations

import argparse
import logging

from .cli_args import UsageError, check_device, device, non_negative_float, non_negative_int, positive_int

logger = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory or Hub repo id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=non_negative_int, default=8000, help="port (0: any free port, logged)")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-batch-size", type=positive_int, default=8,
                        help="most requests per model call (1: no batching)")
    parser.add_argument("--batch-timeout-ms", type=non_negative_float, default=20.0,
                        help="longest a request waits for others to share its model call")
    parser.add_argument("--max-image-pixels", type=positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="largest width x height accepted, checked from the header before decoding")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 can be faster on a busy machine)")
    parser.add_argument("--max-upload-mb", type=positive_int, default=32, help="largest request body in MiB")
    parser.add_argument("--no-demo", action="store_true", help="serve the API only, without the Gradio page")


def _check(args) -> None:
    from PIL import Image

    if args.port > 65535:
        raise UsageError(f"--port must be at most 65535, got {args.port}")
    # PIL refuses images above twice its process-wide limit on open; this server does not change that limit.
    pil_limit = 2 * Image.MAX_IMAGE_PIXELS
    if args.max_image_pixels > pil_limit:
        raise UsageError(f"--max-image-pixels must be at most {pil_limit} (PIL's decompression-bomb limit), "
                         f"got {args.max_image_pixels}")


def _listening_socket(host: str, port: int):
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on --host {host} --port {port}: {error}") from error
    return sock


def _announcing_server(uvicorn, routes: str):
    class AnnouncingServer(uvicorn.Server):
        """Logs the address (the real port for --port 0) once the socket accepts connections."""

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started and sockets:
                host, port = sockets[0].getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                logger.info("serving on http://%s:%d (%s)", shown, port, routes)

    return AnnouncingServer


def run(args) -> int:
    from .model_source import resolve_model_source

    source = resolve_model_source(args.model, "--model")
    _check(args)
    try:
        import gradio  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise UsageError(f"tag2text serve needs the serve extra (pip install \"tag2text[serve]\"): {error}")
    import torch

    from .serving_api import build_app
    from .serving_model import ServingModel
    from .serving_service import TaggingService

    check_device(args.device, "--device")
    if args.threads:
        torch.set_num_threads(args.threads)
    sock = _listening_socket(args.host, args.port)
    try:
        logger.info("loading %s on %s (%s)", args.model, args.device, args.dtype)
        serving_model = ServingModel.load(source, device=args.device, dtype=args.dtype)
        service = TaggingService(serving_model, max_batch_size=args.max_batch_size,
                                 batch_timeout_s=args.batch_timeout_ms / 1000.0,
                                 max_image_pixels=args.max_image_pixels)
        try:
            app = build_app(service, demo=not args.no_demo, max_upload_bytes=args.max_upload_mb * 1024 * 1024)
            endpoints = "/v1/caption and /v1/tags" if serving_model.writes_captions else "/v1/tags (tagging only)"
            routes = ("" if args.no_demo else "demo at /, ") + f"API at {endpoints}, state at /health"
            server = _announcing_server(uvicorn, routes)(uvicorn.Config(app, log_level="warning",
                                                                        timeout_graceful_shutdown=10))
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:
                pass  # uvicorn re-raises Ctrl-C after its graceful shutdown; stopping is the request, not a failure
        finally:
            service.close()
            logger.info("stopped after %s", service.stats())
    finally:
        sock.close()
    return 0
