"""The loop end to end: curated answers -> dataset -> retrain job in the real worker -> adapter
registered with its metrics -> eval gate -> promotion while a client keeps asking -> the local
server answers with the new adapter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from retrain_support import TINY_PARAMS, Client, finished_run
from support.polling import wait_until
from core import audit, db, models, serving, training
from core.cli import train_cmds
from core.config import get_settings
from support.servers import serve_llm


def _cli() -> typer.Typer:
    app = typer.Typer()
    train_cmds.register(app)
    return app


def test_curated_answers_become_a_live_adapter_without_a_failed_request(
        curated_dataset: int, tiny_base: Path, start_worker: object, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with serve_llm(tiny_base) as llm_url:
        monkeypatch.setenv("FLYWHEEL_LLM_URL", llm_url)
        get_settings.cache_clear()
        params = [f"--param={k}={json.dumps(v)}" for k, v in TINY_PARAMS.items() if k not in ("epochs", "rank")]
        queued = CliRunner().invoke(_cli(), ["train", "--epochs", "3", "--rank", "4", *params, "--as", "admin"])
        assert queued.exit_code == 0, queued.output
        run_id = int(queued.output.split()[2])
        with Client(database_url, llm_url) as client:
            start_worker(FLYWHEEL_AUTO_PROMOTE="true", FLYWHEEL_GATE_MARGIN="0.05")  # type: ignore[operator]
            run = finished_run(run_id)
            assert run.status == "succeeded", f"{run.error}\n{run.log}"
            wait_until(lambda: client.answered_by("flywheel-v1") >= 3, timeout_s=60,
                       what="requests answered by the new adapter")
        assert client.failures == []
        assert client.answered_by(None) > 0  # it was asking all along, first on the base model

        with db.connection() as conn:
            adapter = models.get(conn, run.adapter_version)  # type: ignore[arg-type]
        assert adapter is not None and adapter.status == "live" and adapter.dataset_version == curated_dataset
        assert (Path(adapter.path) / "adapter_config.json").exists()
        assert adapter.hyperparams["rank"] == 4 and adapter.hyperparams["epochs"] == 3
        gate = adapter.metrics["gate"]
        assert gate["passed"] and gate["baseline_name"] == "base"
        assert gate["candidate"]["val_loss"] < gate["baseline"]["val_loss"]  # it learned the curated answers
        assert set(gate["candidate"]) >= {"token_f1", "rouge_l", "groundedness"}
        assert adapter.metrics["dataset"]["domain_train"] + adapter.metrics["dataset"]["val"] == 8
        assert run.metrics["promoted"] is True and run.progress == 1
        assert [p["step"] for p in run.losses] == list(range(1, len(run.losses) + 1))
        assert "promoted flywheel-v1" in run.log
        packs = run.metrics["train"]["packs_per_forward"]   # 1 on a CPU; on a GPU as many as fit
        assert f"tokens/s ({packs} pack{'s' if packs > 1 else ''} per forward pass)" in run.log
        with db.connection() as conn:
            assert [(e.actor, e.action, e.target) for e in audit.recent(conn) if e.action.startswith("model.")] == [
                ("auto-promote", "model.promote", "adapter:v1")]
        # The server really answers with it: not the base model's output.
        assert serving.answers_with_adapter(llm_url, "flywheel-v1")

        listed = CliRunner().invoke(_cli(), ["models", "ls"])
        assert "flywheel-v1\tlive" in listed.output and "gate passed vs base" in listed.output


def test_promoting_a_failed_adapter_is_refused(database_url: str) -> None:
    with db.connection() as conn:
        adapter = models.register(conn, base_model="tiny", path="/nowhere", dataset_version=1, hyperparams={})
        models.update(conn, adapter.version, status="failed", error="training process was killed")
    refused = CliRunner().invoke(_cli(), ["models", "promote", str(adapter.version), "--as", "alice"])
    assert refused.exit_code == 2 and "failed; only a finished adapter can go live" in refused.output
    with pytest.raises(models.PromotionRefused):
        serving.promote(adapter.version, actor="admin")
    with db.connection() as conn:
        assert models.live(conn) is None and audit.recent(conn) == []
        assert training.list_runs(conn) == []


def test_an_adapter_that_failed_its_gate_is_promoted_from_the_cli_only_with_despite_gate(database_url: str) -> None:
    with db.connection() as conn:
        adapter = models.register(conn, base_model=get_settings().base_model, path="/nowhere", dataset_version=1,
                                  hyperparams={}, status="training")
        models.update(conn, adapter.version, status="ready", metrics={"gate": {
            "passed": False, "reasons": ["rouge_l 0.1000 is worse than 0.3000 by more than 0.0"]}})
    refused = CliRunner().invoke(_cli(), ["models", "promote", "flywheel-v1", "--as", "alice"])
    assert refused.exit_code == 2
    assert refused.output.startswith("flywheel-v1 did not pass its eval gate: rouge_l 0.1000 is worse than 0.3000 "
                                     "by more than 0.0. Nothing was switched; add --despite-gate")
    # Past the gate it goes to the model server (none runs here): the gate did not stop it.
    tried = CliRunner().invoke(_cli(), ["models", "promote", "v1", "--despite-gate", "--as", "alice"])
    assert tried.exit_code == 2 and "Could not reach the model server" in tried.output
    unknown = CliRunner().invoke(_cli(), ["models", "promote", "latest"])
    assert unknown.exit_code == 2 and "'latest' is not an adapter version: give 3, v3 or flywheel-v3" in unknown.output
    with db.connection() as conn:
        assert models.live(conn) is None and audit.recent(conn) == []
