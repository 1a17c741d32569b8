"""The local generation server: TGI's HTTP API over `LocalModel`, plus adapter loading while
serving (`POST /adapters`). Unlike TGI, an unknown adapter id is a 422, never the base model.

`/metrics` gives TGI's request counter and queue gauges (Prometheus text), which is what a
promotion watches to know an old server has drained."""
from __future__ import annotations

import asyncio
import hmac
import json
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core import metrics as flywheel_metrics
from core.config import get_settings
from core.llm.local_model import (AdapterLoadFailed, AdapterNotLoaded, FinishReason, GenerationParams, LocalModel,
                                  TokenOut, TokenStream)

VERSION = "flywheel-local-0.1"
GENERATION_PATHS = frozenset({"/", "/generate", "/generate_stream", "/v1/chat/completions"})


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    adapter_id: str | None = None
    details: bool = False
    do_sample: bool = False
    max_new_tokens: int | None = Field(default=None, ge=0)
    seed: int | None = Field(default=None, ge=0)
    stop: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=4)
    temperature: float | None = Field(default=None, gt=0)
    top_k: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, lt=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    return_full_text: bool | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    inputs: str = Field(min_length=1)
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False


class TextChunk(BaseModel):
    type: Literal["text"]
    text: str


class ImageChunk(BaseModel):
    type: Literal["image_url"]
    image_url: dict[str, Any]


class ChatMessageIn(BaseModel):
    """A message; its content is text, or (TGI's `MessageContent`) a list of parts, of which a
    text-only model reads the text."""
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[Annotated[TextChunk | ImageChunk, Field(discriminator="type")]]

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: str | list[TextChunk | ImageChunk]) -> str:
        if isinstance(content, str):
            return content
        if any(isinstance(part, ImageChunk) for part in content):
            raise ValueError("this model reads text only: send no image_url parts")
        return "\n".join(part.text for part in content if isinstance(part, TextChunk))


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messages: list[ChatMessageIn] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    stop: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, max_length=4)
    stream: bool = False


class AdapterLoad(BaseModel):
    adapter_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    path: str


class ValidationFailure(ValueError):
    pass


class GenerationFailed(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _GenerationResponse(StreamingResponse):
    """The event stream of one generation: however the response ends (done, failed, or the
    client gone), the generation is cancelled."""

    def __init__(self, events: AsyncIterator[str], stream: TokenStream) -> None:
        super().__init__(events, media_type="text/event-stream")
        self._stream = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.cancel()


@dataclass
class _Counter:
    now: int = 0
    total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _InFlight:
    """ASGI middleware: counts generation requests from arrival until their last byte is sent
    (streams too)."""

    def __init__(self, app: Any, counter: _Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        with self.counter.lock:
            self.counter.now += 1
            self.counter.total += 1
        try:
            await self.app(scope, receive, send)
        finally:
            with self.counter.lock:
                self.counter.now -= 1


def create_app(model: LocalModel, *, default_max_new_tokens: int = 256) -> FastAPI:
    settings = get_settings()
    if settings.database_url is not None:  # report the loop's totals; never start a database for it
        flywheel_metrics.watch_database(settings.database_url.get_secret_value())
    app = FastAPI(title="Flywheel local generation server", version=VERSION)
    max_total = model.max_context
    requests = _Counter()
    app.add_middleware(_InFlight, counter=requests)
    key = settings.llm_token

    @app.middleware("http")
    async def bearer_token(request: Request, call_next: Any) -> Any:
        """With FLYWHEEL_LLM_API_KEY set, every route but /health and /metrics asks for it: on
        a network, nobody else loads, drops or uses adapters."""
        if key is None or request.url.path in ("/health", "/metrics"):
            return await call_next(request)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            return JSONResponse({"error": "a bearer token (FLYWHEEL_LLM_API_KEY) is needed", "error_type": "authentication"},
                                status_code=401)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    @app.exception_handler(ValidationFailure)
    async def failure(_: Request, exc: ValidationFailure) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(GenerationFailed)
    async def generation_failed(_: Request, exc: GenerationFailed) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({}, status_code=200)

    @app.get("/info")
    def info() -> dict[str, Any]:
        return {"model_id": model.name, "model_pipeline_tag": "text-generation", "max_concurrent_requests": 1,
                "max_best_of": 1, "max_stop_sequences": 4, "max_input_tokens": max_total - 1,
                "max_total_tokens": max_total, "validation_workers": 1, "max_client_batch_size": 1,
                "router": "flywheel-local", "version": VERSION}

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        # TGI's names. One generation runs at a time here: the rest wait in the queue.
        with requests.lock:
            now, total = requests.now, requests.total
        lines = ["# TYPE tgi_request_count counter", f"tgi_request_count {total}",
                 "# TYPE flywheel_local_decoded_tokens_total counter",
                 f"flywheel_local_decoded_tokens_total {model.decoded_tokens}",
                 "# TYPE tgi_queue_size gauge", f"tgi_queue_size {max(0, now - 1)}",
                 "# TYPE tgi_batch_current_size gauge", f"tgi_batch_current_size {min(now, 1)}"]
        # Flywheel's own: answer latency and, with a database configured, the loop's totals.
        return PlainTextResponse("\n".join(lines) + "\n" + generate_latest(flywheel_metrics.REGISTRY).decode())

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"id": model.name, "object": "model", "created": 0, "owned_by": "flywheel"}

    @app.get("/adapters")
    def adapters() -> dict[str, Any]:
        held = list(model.adapters.items())   # a copy: a load or unload may run meanwhile
        return {"adapters": [{"adapter_id": k, "path": v, "files": model.stamps.get(k)} for k, v in held]}

    @app.post("/adapters")
    def load(body: AdapterLoad) -> dict[str, Any]:
        try:
            model.load_adapter(body.adapter_id, body.path)
        except (FileNotFoundError, AdapterLoadFailed) as e:
            raise ValidationFailure(str(e)) from e
        return {"adapter_id": body.adapter_id, "path": body.path, "adapters": sorted(model.adapters)}

    @app.delete("/adapters/{adapter_id}")
    def unload(adapter_id: str) -> JSONResponse:
        try:
            model.unload_adapter(adapter_id)
        except AdapterNotLoaded:
            return _error(404, f"Adapter {adapter_id!r} is not loaded.")
        return JSONResponse({"adapter_id": adapter_id, "adapters": sorted(model.adapters)})

    def params_of(p: GenerateParameters, input_len: int) -> GenerationParams:
        max_new = p.max_new_tokens if p.max_new_tokens is not None else default_max_new_tokens
        if input_len + max_new > max_total:
            raise ValidationFailure(f"`inputs` tokens + `max_new_tokens` must be <= {max_total}. "
                                    f"Given: {input_len} `inputs` tokens and {max_new} `max_new_tokens`")
        if p.adapter_id is not None and p.adapter_id not in model.adapters:
            raise ValidationFailure(_unknown_adapter(p.adapter_id, model))
        # As TGI: a temperature other than 1, top_k or top_p turns sampling on, and sampling
        # without a seed draws one (reported in `details`, so the answer can be had again).
        sampling = p.do_sample or p.temperature not in (None, 1.0) or p.top_k is not None or p.top_p is not None
        seed = (p.seed if p.seed is not None else random.randrange(1, 2**63)) if sampling else None
        return GenerationParams(max_new_tokens=max_new, do_sample=sampling, temperature=p.temperature,
                                top_k=p.top_k, top_p=p.top_p, repetition_penalty=p.repetition_penalty, seed=seed,
                                stop=tuple(p.stop))

    # Generation routes are async: a request waiting for the decode thread holds no worker
    # thread, and a client that goes away (a dropped stream, a timeout) cancels its generation.
    @app.post("/")  # TGI's compat route: what huggingface_hub's text_generation posts to
    @app.post("/generate")
    async def generate(body: GenerateRequest, request: Request) -> Any:
        if body.stream:
            return await generate_stream(body)
        ids = model.prompt_ids(body.inputs)
        params = params_of(body.parameters, len(ids))
        tokens, finish = await _complete(request, model.generate(ids, params, body.parameters.adapter_id), model)
        text = "".join(t.text for t in tokens)
        if body.parameters.return_full_text:
            text = body.inputs + text
        response: dict[str, Any] = {"generated_text": text}
        if body.parameters.details:
            response["details"] = {"finish_reason": finish, "generated_tokens": len(tokens), "prefill": [],
                                   "seed": params.seed, "tokens": [_token(t) for t in tokens]}
        return response

    @app.post("/generate_stream")
    async def generate_stream(body: GenerateRequest) -> StreamingResponse:
        ids = model.prompt_ids(body.inputs)
        params = params_of(body.parameters, len(ids))
        stream = model.generate(ids, params, body.parameters.adapter_id)

        async def events() -> AsyncIterator[str]:
            index, text, previous = 0, "", None
            try:
                async for item in stream:
                    if isinstance(item, TokenOut):
                        if previous is not None:
                            yield _sse({"index": index, "token": _token(previous), "generated_text": None,
                                        "details": None})
                            index += 1
                        text += item.text
                        previous = item
                    else:
                        final = {"finish_reason": item, "generated_tokens": index + 1, "input_length": len(ids),
                                 "seed": params.seed}
                        yield _sse({"index": index, "token": _token(previous) if previous else
                                    {"id": 0, "text": "", "logprob": 0.0, "special": True},
                                    "generated_text": text, "details": final if body.parameters.details else None})
            except Exception as e:  # the status line is sent: TGI reports a failure as an event
                yield _sse(_error_body(*_failure(e, model)))
        return _GenerationResponse(events(), stream)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        adapter_id = body.model if body.model and body.model not in ("tgi", model.name) else None
        ids = model.chat_ids([m.model_dump() for m in body.messages])
        # As TGI's chat route (and OpenAI's): it samples unless the temperature is 0.
        params = params_of(GenerateParameters(adapter_id=adapter_id, max_new_tokens=body.max_tokens,
                                              do_sample=body.temperature != 0, temperature=body.temperature or None,
                                              top_p=body.top_p if body.top_p and body.top_p < 1 else None,
                                              seed=body.seed, stop=body.stop or []), len(ids))
        stream = model.generate(ids, params, adapter_id)
        created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:12]}"
        name = adapter_id or model.name
        if body.stream:
            async def chunks() -> AsyncIterator[str]:
                try:
                    async for item in stream:
                        delta: dict[str, Any] = {"role": "assistant",
                                                 "content": item.text if isinstance(item, TokenOut) else ""}
                        finish = None if isinstance(item, TokenOut) else _openai_finish(item)
                        yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                    "model": name, "system_fingerprint": VERSION,
                                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}]})
                except Exception as e:
                    yield _sse(_error_body(*_failure(e, model)))
                    return
                yield "data: [DONE]\n\n"
            return _GenerationResponse(chunks(), stream)
        tokens, finish = await _complete(request, stream, model)
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": name,
                "system_fingerprint": VERSION,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(t.text for t in tokens)},
                             "logprobs": None, "finish_reason": _openai_finish(finish)}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(tokens),
                          "total_tokens": len(ids) + len(tokens)}}

    return app


async def _complete(request: Request, stream: TokenStream,
                    model: LocalModel) -> tuple[list[TokenOut], FinishReason]:
    """The whole generation, cancelled if the client disconnects first (it then ends early, as
    "length": nobody reads it)."""
    async def cancel_on_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        stream.cancel()

    tokens: list[TokenOut] = []
    finish: FinishReason = "length"
    watcher = asyncio.ensure_future(cancel_on_disconnect())
    try:
        async for item in stream:
            if isinstance(item, TokenOut):
                tokens.append(item)
            else:
                finish = item
    except Exception as e:
        raise GenerationFailed(*_failure(e, model)) from e
    finally:
        watcher.cancel()
        stream.cancel()
    return tokens, finish


def _failure(e: Exception, model: LocalModel) -> tuple[int, str]:
    """A generation that failed, as TGI reports it: (status, message). An adapter unloaded while
    the request waited for the model is the caller's error."""
    if isinstance(e, AdapterNotLoaded):
        return 422, _unknown_adapter(e.args[0], model)
    return 424, f"Request failed during generation: {e}"


def _token(t: TokenOut) -> dict[str, Any]:
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}


def _openai_finish(reason: FinishReason) -> str:
    return "length" if reason == "length" else "stop"


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _unknown_adapter(adapter_id: str, model: LocalModel) -> str:
    return (f"Unknown adapter {adapter_id!r}: this server has loaded "
            f"{', '.join(sorted(model.adapters)) or 'no adapters'}. Load it with POST /adapters.")


def _error_body(status: int, message: str) -> dict[str, str]:
    """TGI's ErrorResponse, as a JSON body or a stream's last event."""
    return {"error": message, "error_type": "validation" if status == 422 else "generation"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(_error_body(status, message), status_code=status)
