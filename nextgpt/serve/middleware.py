"""What every request goes through: the body-size limit (413), the one-line request log, and the API key."""
from __future__ import annotations

import hmac
import json
import logging
import time

from .protocol import ApiError
from .settings import ServeSettings

DRAIN_FACTOR = 4  # an oversized body is read (and dropped) up to this many times the limit before answering


def authorize(request, settings: ServeSettings) -> None:
    """ApiError(401) unless the request carries "Authorization: Bearer <api key>" (when the server has a key)."""
    if settings.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                       kind="authentication_error")
    if not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
        raise ApiError(401, "wrong API key", kind="authentication_error")


class RequestLog:
    """Pure ASGI middleware: reads the whole body first (413 above `max_body_bytes`, before any handler runs), then
    logs one line per HTTP request when its response has been sent: method, path, status, body size, time, and
    the fields the handler noted in ``request.state.log`` (answer id, queue wait, tokens, outputs, error)."""

    def __init__(self, app, max_body_bytes: int, logger: logging.Logger):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.logger = logger

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        state = scope.setdefault("state", {})
        status = {"code": 0}

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        body, size = await self._read(receive)
        try:
            if body is None:
                if size < 0:  # the client went away while sending
                    return
                message = (f"the request body ({size} bytes or more) is above this server's limit of "
                           f"{self.max_body_bytes} bytes")
                state["log"] = {"error": "body too large"}
                await self._answer(send_logged, 413, ApiError(413, message).body())
                return
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_logged)
        finally:
            extra = " ".join(f"{k}={v}" for k, v in (state.get("log") or {}).items())
            self.logger.info("%s %s %d in=%dB %.3fs %s", scope["method"], scope["path"], status["code"],
                             max(size, 0), time.monotonic() - started, extra)

    async def _read(self, receive) -> tuple[bytes | None, int]:
        """(body, size); body None when it is too large (size -1 when the client disconnected)."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, -1
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                if size > DRAIN_FACTOR * self.max_body_bytes:
                    return None, size
                continue  # drop the rest of it, so that the client can read the answer
            chunks.append(chunk)
        if size > self.max_body_bytes:
            return None, size
        return b"".join(chunks), size

    @staticmethod
    async def _answer(send, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
