"""The README's configuration reference names every setting there is."""
from __future__ import annotations

from pathlib import Path

from core.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_documents_every_environment_variable() -> None:
    names = [str(f.validation_alias or f"FLYWHEEL_{name.upper()}") for name, f in Settings.model_fields.items()]
    missing = [n for n in names if f"`{n}`" not in README]
    assert missing == []


def test_readme_opens_with_the_two_setup_commands() -> None:
    assert README.split("```")[1].strip().splitlines()[:2] == [
        "make up     # installs what is needed, then runs the whole product on its embedded defaults",
        "make test   # installs what is needed, then runs the test suite"]
