"""Client for TGI's HTTP API (and anything that speaks it: our local server) through
huggingface_hub's InferenceClient, plus OpenAI-compatible servers (vLLM, Ollama, hosted).

TGI answers an unknown `adapter_id` with the BASE model and no error (TGI issue 2505), so
when the caller knows which adapters the server was started with, a request for any other
adapter is refused here, loudly, before it is sent."""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

import httpcore2
import httpx
import httpx2
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from core.llm.base import (BackendUnavailable, ChatMessage, Generation, InvalidRequest, LLMError, RateLimited,
                           UnknownAdapter)

logger = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUSES = (429, 503)
# What a request can fail with: HTTP errors (the hub's), its transport's network errors
# (huggingface_hub 2.x talks through httpx2/httpcore2), and timeouts.
REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    HfHubHTTPError, InferenceTimeoutError, httpx.HTTPError, httpx2.HTTPError, httpcore2.NetworkError,
    httpcore2.TimeoutException, httpcore2.ProtocolError, TimeoutError, ConnectionError,
)


NO_KEY = "no-key"   # the bearer token sent to a model server that needs none


class TGIGenerator:
    """`chat` uses the OpenAI-style chat route (TGI takes the adapter in `model`);
    `generate` uses `/generate` with `adapter_id` and `details`."""

    name = "tgi"

    def __init__(self, url: str, *, timeout: float = 60.0, api_key: str | None = None,
                 known_adapters: Callable[[], Collection[str]] | None = None, base_model_name: str = "tgi",
                 max_retries: int = 3, backoff_s: float = 0.5, max_wait_s: float = 20.0) -> None:
        self.url = url.rstrip("/")
        # Without a key, huggingface_hub sends the machine's Hugging Face token (HF_TOKEN, `hf auth
        # login`) to whatever server this is: a placeholder keeps it from leaving the machine.
        self._client = InferenceClient(base_url=self.url, timeout=timeout, api_key=api_key or NO_KEY)
        self._known_adapters = known_adapters
        self._base_model_name = base_model_name
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_wait_s = max_wait_s

    def chat(self, messages: list[ChatMessage], *, adapter_id: str | None = None,
             max_new_tokens: int = 256, temperature: float = 0.0) -> Generation:
        self._check_adapter(adapter_id)
        out = self._call(lambda: self._client.chat_completion(
            [{"role": m.role, "content": m.content} for m in messages], model=adapter_id or self._base_model_name,
            max_tokens=max_new_tokens, temperature=temperature))
        choice = out.choices[0]
        usage = out.usage
        return Generation(text=choice.message.content or "", model=out.model, adapter_id=adapter_id,
                          prompt_tokens=usage.prompt_tokens if usage else None,
                          completion_tokens=usage.completion_tokens if usage else None,
                          finish_reason=choice.finish_reason)

    def stream(self, messages: list[ChatMessage], *, adapter_id: str | None = None,
               max_new_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        self._check_adapter(adapter_id)
        chunks = self._call(lambda: self._client.chat_completion(
            [{"role": m.role, "content": m.content} for m in messages], model=adapter_id or self._base_model_name,
            max_tokens=max_new_tokens, temperature=temperature, stream=True))
        try:
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except REQUEST_ERRORS as e:
            raise _mapped(e) from e

    def generate(self, prompt: str, *, adapter_id: str | None = None, max_new_tokens: int = 64) -> Any:
        """Raw `/generate` with details (token ids and logprobs): `TextGenerationOutput`."""
        self._check_adapter(adapter_id)
        return self._call(lambda: self._client.text_generation(
            prompt, adapter_id=adapter_id, details=True, max_new_tokens=max_new_tokens, do_sample=False))

    def health(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def _check_adapter(self, adapter_id: str | None) -> None:
        if adapter_id is None or self._known_adapters is None:
            return
        known = set(self._known_adapters())
        if adapter_id not in known:
            logger.error("refusing adapter %r: the server at %s was not started with it (known: %s); "
                         "TGI would silently answer with the base model", adapter_id, self.url, sorted(known))
            raise UnknownAdapter(f"Adapter {adapter_id!r} is not loaded on {self.url}; known adapters: "
                                 f"{', '.join(sorted(known)) or 'none'}.")

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one request; retry 429/503 with exponential backoff (honouring Retry-After), map errors."""
        waited = 0.0
        for attempt in range(self._max_retries + 1):
            try:
                return fn()
            except REQUEST_ERRORS as e:
                status = _status(e)
                if status not in RETRY_STATUSES or attempt == self._max_retries:
                    raise _mapped(e) from e
                delay = _retry_after(e) or self._backoff_s * 2 ** attempt * (1 + random.random() / 4)
                if waited + delay > self._max_wait_s:
                    raise _mapped(e) from e
                logger.warning("model server answered %s; retry %d in %.2f s", status, attempt + 1, delay)
                time.sleep(delay)
                waited += delay
        raise AssertionError("unreachable")


class OpenAIGenerator(TGIGenerator):
    """Any OpenAI-compatible server: the adapter (or the base model) is chosen by `model`."""

    name = "openai"

    def __init__(self, url: str, *, base_model: str, **kwargs: Any) -> None:
        super().__init__(url, base_model_name=base_model, **kwargs)


def _response(e: BaseException) -> Any:
    """The HTTP response an error came with. huggingface_hub's text-generation errors
    (OverloadedError, ValidationError, ...) carry none themselves: it is on the HTTP error they
    were raised from."""
    return getattr(e, "response", None) or getattr(e.__cause__, "response", None)


def _status(e: BaseException) -> int | None:
    return getattr(_response(e), "status_code", None)


def _retry_after(e: BaseException) -> float | None:
    response = _response(e)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _detail(e: BaseException) -> str:
    response = _response(e)
    try:
        body = response.json() if response is not None else {}
        return str(body.get("error") or body.get("message") or body)[:300]
    except ValueError:
        return (response.text[:300] if response is not None else str(e)) or str(e)


def _mapped(e: BaseException) -> LLMError:
    status = _status(e)
    if status is None:
        return BackendUnavailable(f"The model server cannot be reached: {e}")
    detail = _detail(e)
    # TGI and ours: 422 naming the adapter; vLLM: 404, the adapter (lost in a restart: runtime
    # loads do not survive one) being a model that "does not exist".
    if (status == 422 and "adapter" in detail.lower()) or (status == 404 and "does not exist" in detail.lower()):
        return UnknownAdapter(f"The model server does not know that adapter: {detail}")
    if status == 422:
        return InvalidRequest(f"The model server rejected the request (422): {detail}")
    if status == 424:
        return LLMError(f"Generation failed on the model server (424): {detail}")
    if status == 429:
        return RateLimited(f"The model server is overloaded (429) and kept refusing after retries: {detail}")
    if status >= 500:
        return BackendUnavailable(f"The model server failed ({status}): {detail}")
    return LLMError(f"The model server answered {status}: {detail}")
