"""The OpenAI-compatible HTTP API: a FastAPI app over the scheduler.

``POST /v1/chat/completions`` (the tokenizer's chat template), ``POST /v1/completions``, ``GET /v1/models``,
``GET /health``, ``GET /metrics`` (Prometheus) and a chat page at ``/``. Text is the tokenizer's business and lives
here and in :mod:`ptp.serve.text`; the scheduler and the engine see token ids.

Every error is an OpenAI error body (``{"error": {"message", "type", "param", "code"}}``) with a 4xx status: invalid
JSON, fields of the wrong type or out of range, an empty conversation, a prompt longer than the context, a body over
the size limit (413), a full queue (429), a missing or wrong API key (401).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from jinja2 import TemplateError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from ptp.decode.cost import call_cost
from ptp.decode.inputs import context_length, stop_tokens
from ptp.serve.config import ServeConfig
from ptp.serve.metrics import Metrics
from ptp.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
    Message,
    StreamOptions,
    TextPart,
    error_body,
)
from ptp.serve.scheduler import Delta, Done, Failed, Job, QueueFull, Scheduler, auxiliaries
from ptp.serve.text import TextStream

log = logging.getLogger("ptp.serve")

#: Paths that need the API key when one is set.
PROTECTED = ("/v1/", "/metrics")
#: Status recorded for a request whose client went away before the answer.
CLIENT_GONE = 499


def create_app(model, tokenizer, config: ServeConfig, model_name: str) -> FastAPI:
    """The app serving ``model`` (a :class:`ptp.PTPModel`) with ``tokenizer`` under the id ``model_name``."""
    eos, pad = stop_tokens(model, tokenizer)
    pad = pad if pad is not None else 0
    engine = {k: v for k, v in (("auxiliary_budget", config.auxiliary_budget),
                                 ("max_draft_length", config.max_draft_length)) if v is not None}  # fmt: skip
    # A batch starts with one row and grows and shrinks in powers of two as rows join and leave, and the engine rounds
    # a captured run's cache and new-token room up to steps of 256: a few shapes serve every request.
    engine["cuda_graph"] = config.cuda_graph and model.device.type == "cuda"
    if config.use_drafter and model.device.type == "cpu" and config.auxiliary_budget is None:
        # The CPU default budget comes from a call cost measured once per machine: measure it before the first
        # request rather than during it.
        log.info("the call cost on this CPU: %s", call_cost(model))
    scheduler = Scheduler(model, eos, pad, config.max_batch, config.max_queue, config.use_drafter, **engine)
    metrics = Metrics(scheduler)
    context = context_length(model)
    default_sampling = model.config.sampling
    vocabulary = len(tokenizer)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        yield
        await scheduler.close()

    app = FastAPI(title="ptp-lm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.scheduler, app.state.metrics = scheduler, metrics
    app.add_middleware(_LimitBody, limit=config.max_body_bytes)
    if config.api_key is not None:
        app.add_middleware(_RequireKey, key=config.api_key)
    app.add_middleware(_CountRequests, metrics=metrics)  # the last added is the outermost: it sees every answer

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        if first.get("type") == "json_invalid":
            message = f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
            return JSONResponse(error_body(message), status_code=400)
        param = _param(first.get("loc", ()))
        return JSONResponse(error_body(f"{param or 'body'}: {first['msg']}", param=param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException):
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(error.detail), kind), status_code=error.status_code,
                            headers=getattr(error, "headers", None))  # fmt: skip

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body("internal server error", "server_error"), status_code=500)

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "ptp-lm",
                "ptp": {"drafter": config.use_drafter, "sampling": default_sampling.to_dict(),
                        "context_length": context, "max_tokens": config.max_tokens}}  # fmt: skip

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(404, f"model {name!r} is not served here; this server serves {model_name!r}",
                           param="model", code="model_not_found")  # fmt: skip

    def token_budget(body: GenerationRequest, prompt: list[int], field: str) -> int:
        """The request's max_tokens: asked for, or what the limit and the context leave."""
        room = None if context is None else context - len(prompt)
        if room is not None and room < 1:
            raise APIError(400, f"the prompt has {len(prompt)} tokens; the model's context is {context}",
                           param=field, code="context_length_exceeded")  # fmt: skip
        asked = body.requested_tokens()
        if asked is None:
            return config.max_tokens if room is None else min(config.max_tokens, room)
        if asked > config.max_tokens:
            raise APIError(400, f"max_tokens is {asked}; this server allows at most {config.max_tokens}",
                           param="max_tokens")  # fmt: skip
        if room is not None and asked > room:
            raise APIError(400, f"the prompt ({len(prompt)} tokens) and max_tokens ({asked}) exceed the model's "
                           f"context of {context}", param="max_tokens", code="context_length_exceeded")  # fmt: skip
        return asked

    async def answer(request: Request, body: GenerationRequest, prompt: list[int], field: str, chat: bool) -> Response:
        max_tokens = token_budget(body, prompt, field)
        job = Job(prompt, max_tokens, body.sampling(default_sampling), auxiliaries(body.seed, max_tokens),
                  TextStream(tokenizer, body.stop_strings()), scheduler.eos)  # fmt: skip
        try:
            scheduler.submit(job)
        except QueueFull as error:
            raise APIError(429, f"the server is busy ({error}); retry later", type="server_busy",
                           code="queue_full", headers={"Retry-After": "1"}) from error  # fmt: skip
        reply = _Reply(job, model_name, chat, time.perf_counter())
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(reply.events(scheduler, metrics, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})  # fmt: skip
        return await reply.whole(request, scheduler, metrics)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        check_model(body.model)
        if not getattr(tokenizer, "chat_template", None):
            raise APIError(400, "this model's tokenizer has no chat template; use /v1/completions", param="messages")
        try:
            text = tokenizer.apply_chat_template([m.for_template() for m in body.messages], tokenize=False,
                                                 add_generation_prompt=True)  # fmt: skip
        except TemplateError as error:
            raise APIError(400, f"the chat template refused the messages: {error}", param="messages") from error
        prompt = tokenizer(text, add_special_tokens=False).input_ids
        if not prompt:
            raise APIError(400, "the conversation is empty after the chat template", param="messages")
        return await answer(request, body, prompt, "messages", chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_model(body.model)
        if isinstance(body.prompt, str):
            prompt = tokenizer(body.prompt).input_ids
        else:
            prompt = list(body.prompt)
            if not all(0 <= token < vocabulary for token in prompt):
                raise APIError(400, f"prompt token ids must lie in [0, {vocabulary})", param="prompt")
        if not prompt:
            raise APIError(400, "the prompt has no tokens", param="prompt")
        return await answer(request, body, prompt, "prompt", chat=False)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str) -> dict:
        check_model(name)
        return model_card()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "waiting": len(scheduler.waiting), "running": scheduler.running}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("ptp.serve").joinpath("chat.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> str:
        return page

    return app


class _Reply:
    """One request's answer, built from its job's events: streamed as server-sent events or returned whole."""

    def __init__(self, job: Job, model_name: str, chat: bool, started: float):
        self.job, self.model_name, self.chat, self.started = job, model_name, chat, started
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.first_text: float | None = None

    def _envelope(self, choices: list[dict], chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_name, "choices": choices}

    def _choice(self, text: str, finish_reason: str | None, chunk: bool, first: bool = False) -> dict:
        choice: dict = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
        if not self.chat:
            choice["text"] = text
        elif chunk:
            choice["delta"] = ({"role": "assistant"} if first else {}) | ({"content": text} if text or first else {})
        else:
            choice["message"] = {"role": "assistant", "content": text}
        return choice

    def _finished(self, metrics: Metrics, done: Done) -> dict:
        """Record the request and return its usage (with the extensions ``forward_calls`` and ``tokens_per_call``)."""
        seconds = time.perf_counter() - self.started
        first = None if self.first_text is None else self.first_text - self.started
        metrics.finished(done.prompt_tokens, done.completion_tokens, done.forward_calls, seconds, first)
        return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens, "forward_calls": done.forward_calls,
                "tokens_per_call": round(done.completion_tokens / max(done.forward_calls, 1), 4)}  # fmt: skip

    async def events(self, scheduler: Scheduler, metrics: Metrics, include_usage: bool):
        """Server-sent events in OpenAI's chunk format, ending with ``[DONE]``; a client that goes away (the
        response task is cancelled) frees its row."""
        job = self.job
        try:
            if self.chat:
                yield _sse(self._envelope([self._choice("", None, chunk=True, first=True)], chunk=True))
            while True:
                event = await job.events.get()
                if isinstance(event, Delta):
                    self.first_text = self.first_text or time.perf_counter()
                    yield _sse(self._envelope([self._choice(event.text, None, chunk=True)], chunk=True))
                    continue
                if isinstance(event, Failed):
                    yield _sse(error_body(event.message, "server_error"))
                elif isinstance(event, Done):
                    usage = self._finished(metrics, event)
                    reason = "length" if event.finish_reason == "length" else "stop"
                    yield _sse(self._envelope([self._choice("", reason, chunk=True)], chunk=True))
                    if include_usage:
                        yield _sse(self._envelope([], chunk=True) | {"usage": usage})
                yield "data: [DONE]\n\n"
                return
        finally:
            if not job.finished:
                scheduler.cancel(job)

    async def whole(self, request: Request, scheduler: Scheduler, metrics: Metrics) -> Response:
        """The answer as one JSON body, once the row has ended; if the client goes away first, its row is freed."""
        job, pieces = self.job, []
        gone = asyncio.ensure_future(_disconnect(request))
        try:
            while True:
                getting = asyncio.ensure_future(job.events.get())
                await asyncio.wait({getting, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    scheduler.cancel(job)
                    return Response(status_code=CLIENT_GONE)
                event = getting.result()
                if isinstance(event, Delta):
                    self.first_text = self.first_text or time.perf_counter()
                    pieces.append(event.text)
                elif isinstance(event, Failed):
                    return JSONResponse(error_body(event.message, "server_error"), status_code=500)
                else:
                    usage = self._finished(metrics, event)
                    reason = "length" if event.finish_reason == "length" else "stop"
                    body = self._envelope([self._choice("".join(pieces), reason, chunk=False)], chunk=False)
                    return JSONResponse(body | {"usage": usage})
        finally:
            gone.cancel()


#: Names that may appear in a request's fields' paths (pydantic adds the member types of unions after them).
_FIELDS = frozenset().union(*(m.model_fields for m in (ChatCompletionRequest, CompletionRequest, Message, TextPart,
                                                        StreamOptions)))  # fmt: skip


def _param(loc) -> str | None:
    """The field a validation error is about, as ``messages.0.content``."""
    parts = []
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if not (isinstance(part, int) or part in _FIELDS):
            break
        parts.append(str(part))
    return ".".join(parts) or None


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _RequireKey:
    """ASGI middleware: paths under :data:`PROTECTED` need ``Authorization: Bearer <key>``; checked before the body is
    read, so an unauthenticated client learns nothing about its request."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED):
            scheme, _, token = (Headers(scope=scope).get("authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                body = error_body("missing or incorrect API key (Authorization: Bearer <key>)",
                                  code="invalid_api_key")  # fmt: skip
                response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _LimitBody:
    """ASGI middleware: reading a body longer than ``limit`` bytes (by its Content-Length, or by the bytes that
    arrive) raises a 413, which the app's handlers answer with an error body."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        seen = int(declared) if declared.isdigit() else 0

        async def limited():
            nonlocal seen
            if seen > self.limit:
                raise HTTPException(413, f"the request body is larger than {self.limit} bytes")
            message = await receive()
            if message["type"] == "http.request" and not declared.isdigit():
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"the request body is larger than {self.limit} bytes")
            return message

        await self.app(scope, receive if scope["method"] in ("GET", "HEAD") else limited, send)


class _CountRequests:
    """ASGI middleware: counts every HTTP answer by endpoint and status (``ptp_requests_total``)."""

    ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/")

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in self.ENDPOINTS else "/v1/models" if path.startswith("/v1/models/") else "other"
        status = {"code": CLIENT_GONE}

        async def counting(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
