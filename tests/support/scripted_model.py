"""A stand-in for the model where a test is about the graph's logic, not the words."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from core.llm.base import ChatMessage, Generation


@dataclass
class ScriptedModel:
    """A stand-in for the model in tests of the graph's logic: answers from a script."""

    reply: str = "New laptops are ordered through the IT portal under Hardware > Laptop request [1]."
    name: str = "scripted"
    calls: list[list[ChatMessage]] = field(default_factory=list)
    error: Exception | None = None

    def chat(self, messages: list[ChatMessage], *, adapter_id: str | None = None,
             max_new_tokens: int = 256, temperature: float = 0.0) -> Generation:
        self.calls.append(messages)
        if self.error is not None:
            raise self.error
        return Generation(text=self.reply, model="scripted-model", adapter_id=adapter_id,
                          prompt_tokens=sum(len(m.content.split()) for m in messages),
                          completion_tokens=len(self.reply.split()))

    def stream(self, messages: list[ChatMessage], *, adapter_id: str | None = None,
               max_new_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        yield self.chat(messages, adapter_id=adapter_id).text

    def health(self) -> bool:
        return self.error is None
