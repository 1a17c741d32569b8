"""The production compose file runs the Procfile's processes against pgvector and a GPU TGI."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yml"


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_compose_runs_every_procfile_process_but_llm_which_tgi_replaces() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(_procfile()) - {"llm"} <= set(services)
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["tgi"]["image"].startswith("ghcr.io/huggingface/text-generation-inference:")
    for name in ("bot", "dashboard", "worker"):
        assert services[name]["environment"]["FLYWHEEL_LLM_URL"] == "http://tgi:80"
        assert services[name]["depends_on"]["db"]["condition"] == "service_healthy"


def test_worker_and_tgi_share_the_adapters_volume() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert "adapters:/adapters" in services["worker"]["volumes"]
    assert "adapters:/adapters:ro" in services["tgi"]["volumes"]
    assert services["worker"]["environment"]["FLYWHEEL_ADAPTERS_DIR"] == "/adapters"


def test_every_folder_a_flywheel_service_writes_to_is_the_flywheel_users_in_the_image() -> None:
    # A named volume starts as a copy of the image's folder; one the image lacks is root's, and
    # the worker (uid 1000) could not write its adapters there.
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    [chown] = [line for line in dockerfile.splitlines() if "chown flywheel" in line]
    owned = set(chown.split("chown flywheel", 1)[1].split())
    writes = {v.split(":")[1] for name in ("bot", "dashboard", "worker") for v in services[name].get("volumes", [])
              if not v.endswith(":ro")}
    assert writes and writes <= owned


def test_compose_file_keeps_secrets_out() -> None:
    text = COMPOSE.read_text()
    assert "${POSTGRES_PASSWORD:?" in text and "xox" not in text


def test_the_database_password_reaches_flywheel_as_the_database_takes_it() -> None:
    # Not inside DATABASE_URL, where a password with @, / or # would need escaping the database never sees.
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    password = services["db"]["environment"]["POSTGRES_PASSWORD"]
    for name in ("bot", "dashboard", "worker"):
        environment = services[name]["environment"]
        assert environment["PGPASSWORD"] == password
        assert environment["DATABASE_URL"] == "postgresql://flywheel@db:5432/flywheel"


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0, reason="docker compose is not installed")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                            text=True, env={**os.environ, "POSTGRES_PASSWORD": "x"})
    assert result.returncode == 0, result.stderr
