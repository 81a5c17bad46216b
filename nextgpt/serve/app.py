"""The FastAPI app: OpenAI-compatible chat completions over one loaded `NextGPTGenerator`.

Routes: ``POST /v1/chat/completions`` (JSON or server-sent events), ``GET /v1/models``, ``GET /v1/files/{id}/{name}``
(answer media with ``media_urls``), ``GET /health`` (no key needed). Every request is logged in one line (see
`RequestLog`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import NextGPTError
from .inputs import decode_messages
from .middleware import RequestLog, authorize
from .protocol import (
    MIME_TYPES,
    ApiError,
    ChatRequest,
    assistant_content,
    chunk_body,
    completion_body,
    generation_options,
    usage,
    validation_message,
)
from .settings import ServeSettings
from .work import ScratchFolder, answer_work
from .worker import GenerationQueue, Job, QueueFull

logger = logging.getLogger("nextgpt.serve")


class _ClientGone(Exception):
    pass


def create_app(generator, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving `generator` (a loaded `NextGPTGenerator`, warmed up by the caller if wanted)."""
    from .outputs import MediaStore

    settings = settings or ServeSettings()
    queue = GenerationQueue(settings.max_queue)
    store = MediaStore(settings.media_dir, settings.keep_media)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(queue.close)
        store.close()

    app = FastAPI(title="NExT-GPT", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.generator, app.state.settings, app.state.queue, app.state.store = generator, settings, queue, store
    app.add_middleware(RequestLog, max_body_bytes=settings.max_body_bytes, logger=logger)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        _note(request, error=err.message)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_id, **queue.state()}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request, settings)
        return {"object": "list", "data": [{"id": settings.model_id, "object": "model", "created": 0,
                                            "owned_by": "nextgpt"}]}

    @app.get("/v1/files/{answer_id}/{name}")
    async def files(request: Request, answer_id: str, name: str):
        authorize(request, settings)
        path = store.find(answer_id, name)
        if path is None:
            raise ApiError(404, f"no file {answer_id}/{name} (media are kept for the last {settings.keep_media} "
                                "answers)", kind="not_found_error")
        return FileResponse(path, media_type=MIME_TYPES[name.split("_")[0]])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request, settings)
        req = _parse(await request.body())
        if req.model not in (None, "", settings.model_id):
            raise ApiError(404, f"model {req.model!r} is not served here; this server serves "
                                f"{settings.model_id!r}", "model", "not_found_error")
        options, force, resolved = generation_options(req, generator.options, settings,
                                                      generator.model.config.max_length)
        scratch = ScratchFolder()
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        base = str(request.base_url).rstrip("/")
        _note(request, id=cid, stream=req.stream, media_in=_counts(_input_parts(req)), force=",".join(force) or "-")
        # the content parts are decoded in the generation thread, with the answer (one hand-over fewer)
        work = answer_work(generator, lambda: decode_messages(req.messages, settings, scratch), options, force,
                           resolved.video_fps, scratch, (lambda: store.folder(cid)) if settings.media_urls else None,
                           f"{base}/v1/files/{cid}" if settings.media_urls else None, stream=req.stream)
        job = Job(work, asyncio.get_running_loop(), cleanup=scratch.remove)
        try:
            queue.submit(job)
        except QueueFull as err:
            raise ApiError(429, f"the server is busy ({err}); retry later", kind="rate_limit_error") from None
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            first = await _next_event(job, gone)
            _raise_failure(first)
            if req.stream:
                gone.cancel()  # from here on the streaming response watches the connection
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                return StreamingResponse(_sse(job, first, cid, settings.model_id, include_usage, request),
                                         media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            text, parts, done = [], [], None
            item = first
            while item is not None:
                _raise_failure(item)
                if item[0] == "text":
                    text.append(item[1])
                elif item[0] == "media":
                    parts.append(item[1])
                else:
                    done = item
                item = await _next_event(job, gone)
        except _ClientGone:
            job.cancel()
            _note(request, error="client disconnected; generation cancelled")
            return JSONResponse({}, status_code=499)
        finally:
            gone.cancel()
        _, finish, prompt_tokens, completion_tokens = done
        _note(request, queued=f"{job.waited:.2f}s", tokens=f"{prompt_tokens}+{completion_tokens}",
              outputs=_part_counts(parts), finish=finish)
        # a plain dict would go through FastAPI's generic encoder first; the body is JSON types already
        return JSONResponse(completion_body(cid, settings.model_id, assistant_content("".join(text), parts), finish,
                                            usage(prompt_tokens, completion_tokens)))

    return app


def _parse(body: bytes) -> ChatRequest:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as err:
        raise ApiError(400, validation_message(err)) from None


def _raise_failure(item: Any) -> None:
    if isinstance(item, ApiError):
        raise item
    if isinstance(item, NextGPTError):
        raise ApiError(400, " ".join(str(item).split()))
    if isinstance(item, Exception):
        logger.error("generation failed: %r", item, exc_info=item)
        raise ApiError(500, f"generation failed: {type(item).__name__}: {item}", kind="server_error")


async def _next_event(job: Job, gone: asyncio.Future) -> Any:
    """The job's next event, or _ClientGone when the client disconnects first (`gone` completes)."""
    get = asyncio.ensure_future(job.next_event())
    done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    if get in done:
        return get.result()
    get.cancel()
    raise _ClientGone()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse(job: Job, first: Any, cid: str, model: str, include_usage: bool, request: Request
               ) -> AsyncIterator[str]:
    """Server-sent events: the role, text deltas, one chunk per medium, the finish reason, [DONE]. A failure after
    the stream started arrives as an {"error": ...} event."""
    def event(body: dict) -> str:
        return "data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n\n"

    parts = []
    try:
        yield event(chunk_body(cid, model, {"role": "assistant", "content": ""}))
        item = first
        while item is not None:
            if isinstance(item, Exception):
                status = 400 if isinstance(item, NextGPTError) else 500
                error = item if isinstance(item, ApiError) else ApiError(status, " ".join(str(item).split()))
                yield event(error.body())
                _note(request, error=str(item))
                break
            if item[0] == "text":
                yield event(chunk_body(cid, model, {"content": item[1]}))
            elif item[0] == "media":
                parts.append(item[1])
                yield event(chunk_body(cid, model, {"content": [item[1]]}))
            else:
                _, finish, prompt_tokens, completion_tokens = item
                yield event(chunk_body(cid, model, {}, finish))
                if include_usage:
                    yield event(chunk_body(cid, model, {}, use=usage(prompt_tokens, completion_tokens),
                                           choices=False))
                _note(request, queued=f"{job.waited:.2f}s", tokens=f"{prompt_tokens}+{completion_tokens}",
                      outputs=_part_counts(parts), finish=finish)
            item = await job.next_event()
        yield "data: [DONE]\n\n"
    finally:
        if not job.finished.is_set():
            job.cancel()
            _note(request, error="client disconnected; generation cancelled")


def _note(request: Request, **fields: Any) -> None:
    """Add fields to the request's log line."""
    log = getattr(request.state, "log", None)
    if log is None:
        log = request.state.log = {}
    log.update(fields)


def _input_parts(req: ChatRequest) -> dict[str, int]:
    kinds = {"image_url": "image", "video_url": "video", "input_audio": "audio"}
    counts = {m: 0 for m in kinds.values()}
    for message in req.messages:
        if message.role == "user" and isinstance(message.content, list):
            for part in message.content:
                kind = kinds.get(part.get("type")) if isinstance(part, dict) else None
                if kind:
                    counts[kind] += 1
    return counts


def _counts(counts: dict[str, int]) -> str:
    return ",".join(f"{m}:{n}" for m, n in counts.items() if n) or "-"


def _part_counts(parts: list[dict]) -> str:
    counts: dict[str, int] = {}
    for p in parts:
        counts[p["type"]] = counts.get(p["type"], 0) + 1
    return _counts(counts)
