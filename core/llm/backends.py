"""Choose the generation backend from settings."""
from __future__ import annotations

from collections.abc import Callable, Collection

from core.config import Settings
from core.llm.base import Generator
from core.llm.tgi import OpenAIGenerator, TGIGenerator


def make_generator(settings: Settings, *, known_adapters: Callable[[], Collection[str]] | None = None) -> Generator | None:
    """The configured backend; None for `extractive` (the agent quotes sources, no model).

    `local` is our own server, which refuses unknown adapters itself; `tgi` silently falls
    back to the base model on one, so it gets `known_adapters` (the adapter registry)."""
    api_key = settings.llm_token
    if settings.llm_backend == "extractive":
        return None
    if settings.llm_backend == "local":
        return TGIGenerator(settings.llm_url, timeout=settings.llm_timeout_s, api_key=api_key)
    if settings.llm_backend == "tgi":
        return TGIGenerator(settings.llm_url, timeout=settings.llm_timeout_s, api_key=api_key,
                            known_adapters=known_adapters)
    return OpenAIGenerator(settings.llm_url, base_model=settings.llm_model or "default",
                           timeout=settings.llm_timeout_s, api_key=api_key)
