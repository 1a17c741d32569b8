"""The agent's state (checkpointed in Postgres, so JSON-serialisable) and its run-time context."""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

from core.config import Settings
from core.llm.base import Generator

Route = Literal["answered", "review", "declined"]


class Source(TypedDict):
    """A retrieved chunk as the agent keeps it: numbered [n] in the prompt and the answer."""

    n: int
    chunk_id: int
    document_id: int
    title: str
    heading: str
    url: str | None
    text: str
    score: float
    dense_score: float | None
    restricted: bool   # its document was not visible to everyone (answers recorded before: absent)


class Turn(TypedDict, total=False):
    question: str
    answer: str
    restricted: bool   # drew on documents not everyone may see (turns recorded before: absent)


class Decision(TypedDict, total=False):
    """A reviewer's decision, the value `interrupt()` resumes with; "withdraw" (the asker
    deleted the question) only releases the thread: nothing is recorded or delivered."""

    action: Literal["approve", "edit", "reject", "withdraw"]
    reviewer: str
    text: str      # edit: the answer to deliver
    reason: str    # reject: why


class AgentState(TypedDict, total=False):
    answer_id: int
    question: str
    user_id: str | None
    channel_id: str | None
    history: Annotated[list[Turn], operator.add]   # earlier turns of this thread
    sources: list[Source]
    draft: str
    restricted_context: bool   # the draft's prompt held earlier turns that drew on restricted documents
    model: str | None
    adapter_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    confidence: float
    route: Route
    reason: str
    final: str
    decision: Decision | None
    timings: dict[str, float]


@dataclass(frozen=True)
class AgentContext:
    """What the nodes need besides the state: given again on every invoke and resume.
    `generator=None` means extractive answers (no model); `reviews=False` (evaluation runs)
    delivers drafts that would have gone to a reviewer, noting why."""

    settings: Settings
    generator: Generator | None = None
    adapter_id: str | None = None
    reviews: bool = True
    extras: dict[str, Any] = field(default_factory=dict)


def new_turn(answer_id: int, question: str, user_id: str | None, channel_id: str | None) -> dict[str, Any]:
    """The input of one question: resets every per-turn field (history is kept by its reducer),
    the route included: a route left from the turn before would send this question its way."""
    return {"answer_id": answer_id, "question": question, "user_id": user_id, "channel_id": channel_id,
            "route": None, "sources": [], "draft": "", "restricted_context": False, "model": None, "adapter_id": None,
            "prompt_tokens": None, "completion_tokens": None, "confidence": 0.0, "reason": "", "final": "", "decision": None,
            "timings": {}}
