"""The HTTP app of ``tag2text serve`` (FastAPI): the JSON API, with the Gradio demo mounted at ``/``.

- ``POST /v1/caption``: multipart ``image`` file, or JSON ``{"image": base64, ...}``; optional ``tags``
  (``"a | b"`` or a list), ``threshold``, ``num_beams``, ``max_new_tokens`` ->
  ``{"tags": [...], "tag_scores": {...}, "caption": "..."}``.
- ``POST /v1/tags``: ``image`` and optional ``threshold`` -> ``{"tags", "tag_scores"}`` (no decoder); a RAM / RAM++
  model answers ``{"tags", "tags_zh", "tag_scores"}`` (Chinese names) and refuses ``/v1/caption`` with a 400.
- ``GET /health``: model, device, dtype, limits and the batching counters; ``GET /v1/stats``: the counters.

Errors are ``{"error": "message"}`` with a 4xx status for bad requests and 500 when the model call fails.
"""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .serving_inputs import RequestError, decode_base64

logger = logging.getLogger(__name__)

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
USAGE = "send multipart/form-data with an 'image' file, or JSON {\"image\": \"<base64>\"}"


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"request body of {declared} bytes is over the server's limit of {max_bytes}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise RequestError(413, f"request body is over the server's limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_fields(body: bytes) -> tuple[bytes, dict]:
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(400, f"request body is not valid JSON ({error})") from error
    if not isinstance(fields, dict):
        raise RequestError(400, f"JSON body must be an object with an 'image' field, got {type(fields).__name__}")
    image = decode_base64(fields["image"]) if "image" in fields else b""
    return image, fields


async def _form_fields(request: Request, body: bytes) -> tuple[bytes, dict]:
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=32)
    except Exception as error:  # noqa: BLE001 - starlette raises several kinds for a malformed body
        raise RequestError(400, f"malformed form body ({error})") from error
    try:
        fields, image = {}, b""
        for name in dict.fromkeys(form.keys()):
            values = form.getlist(name)
            if name == "tags":
                fields[name] = values[0] if len(values) == 1 else list(values)
                if any(not isinstance(value, str) for value in values):
                    raise RequestError(400, "field 'tags' must be text, not a file")
                continue
            if len(values) > 1:
                raise RequestError(400, f"field {name!r} was sent {len(values)} times; send it once")
            value = values[0]
            if name == "image":
                if not isinstance(value, UploadFile):
                    raise RequestError(400, "field 'image' must be a file (e.g. curl -F image=@photo.jpg)")
                image = await value.read()
            elif isinstance(value, UploadFile):
                raise RequestError(400, f"field {name!r} must be text, not a file")
            fields[name] = value
        return image, fields
    finally:
        await form.close()


def build_app(service, demo: bool = True, max_upload_bytes: int = 32 * 1024 * 1024) -> FastAPI:
    """The FastAPI app around a :class:`~tag2text.hub.serving_service.TaggingService` (which the caller
    owns and closes); ``demo`` mounts the Gradio page at ``/``."""
    app = FastAPI(title="Tag2Text", summary="Image tagging and tag-guided captioning", docs_url="/docs")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        logger.info("%s %s -> %d: %s", request.method, request.url.path, error.status, error.message)
        return JSONResponse({"error": error.message}, status_code=error.status)

    async def handle(kind: str, request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await _read_body(request, max_upload_bytes)
        if not body:
            raise RequestError(400, f"request body is empty; {USAGE}")
        if content_type == "application/json":
            image, fields = _json_fields(body)
        elif content_type in FORM_TYPES:
            image, fields = await _form_fields(request, body)
        else:
            raise RequestError(415, f"unsupported content type {content_type or '(none)'!r}; {USAGE}")
        prepared = await run_in_threadpool(service.prepare, kind, image, fields)
        try:
            result = await asyncio.wrap_future(service.submit(prepared))
        except Exception as error:  # noqa: BLE001 - the batch failed: a server error, the server stays up
            logger.exception("model call failed")
            return JSONResponse({"error": f"model call failed: {error}"}, status_code=500)
        return JSONResponse(result)

    @app.post("/v1/caption")
    async def caption(request: Request):
        return await handle("caption", request)

    @app.post("/v1/tags")
    async def tags(request: Request):
        return await handle("tags", request)

    @app.get("/health")
    async def health():
        return service.health()

    @app.get("/v1/stats")
    async def stats():
        return service.stats()

    if demo:
        import gradio as gr

        from .serving_demo import build_demo

        blocks = build_demo(service)
        app = gr.mount_gradio_app(app, blocks, path="/", max_file_size=max_upload_bytes, ssr_mode=False,
                                  footer_links=[])
        app.state.demo = blocks
    return app
