"""The one small interface every generation backend speaks, and the errors it raises."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Generation:
    """What a backend gives back: the text and what produced it."""

    text: str
    model: str                 # base model name as the server reports it
    adapter_id: str | None     # the LoRA adapter that answered; None for the base model
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None = None


class LLMError(Exception):
    """A generation failed; the message is fit to show an operator."""


class BackendUnavailable(LLMError):
    """The model server cannot be reached (connection refused, timeout, 503 after retries)."""


class UnknownAdapter(LLMError):
    """The adapter asked for is not one the server has loaded."""


class InvalidRequest(LLMError):
    """The server rejected the request (422: bad parameters, prompt too long)."""


class RateLimited(LLMError):
    """The server kept answering 429 after the retries."""


class Generator(Protocol):
    """A generation backend. `adapter_id=None` means the base model."""

    name: str

    def chat(self, messages: list[ChatMessage], *, adapter_id: str | None = None,
             max_new_tokens: int = 256, temperature: float = 0.0) -> Generation: ...

    def stream(self, messages: list[ChatMessage], *, adapter_id: str | None = None,
               max_new_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]: ...

    def health(self) -> bool: ...


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_files_stamp(folder: str | Path) -> str | None:
    """What tells one writing of an adapter's weights from another: their size and modification
    time, as make and rsync tell changed files. None when the folder holds no weights."""
    for name in ADAPTER_WEIGHTS:
        weights = Path(folder) / name
        if weights.exists():
            stat = weights.stat()
            return f"{stat.st_size}:{stat.st_mtime_ns}"
    return None
