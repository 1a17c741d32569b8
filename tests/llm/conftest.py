"""A real `flywheel serve-llm` process with the tiny model, shared by the tests of this folder."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.servers import serve_llm


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path) -> Iterator[str]:
    with serve_llm(tiny_model_dir) as url:
        yield url
