"""The Models page: adapters, the live one, the server's health; promote and roll back, and clear
refusals that change nothing."""
from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core import db, models, serving
from core.config import get_settings
from dashboard_helpers import audit_rows, open_page, table, texts
from support.servers import serve_llm
from support.tiny_model import make_lora_adapter


class FakeVLLM(BaseHTTPRequestHandler):
    """Just enough of vLLM for a promotion: health, and runtime LoRA loading."""

    loaded: list[str] = []
    loading = threading.Event()    # set when a load request arrives
    may_answer = threading.Event()   # a load answers once this is set (not `finish`: a handler method)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(200 if self.path == "/health" else 404, {})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/load_lora_adapter":
            FakeVLLM.loading.set()
            FakeVLLM.may_answer.wait(30)
            FakeVLLM.loaded.append(body["lora_name"])
            self._reply(200, {})
        else:
            self._reply(404, {})

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def vllm(dashboard_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "openai")
    monkeypatch.setenv("FLYWHEEL_LLM_MODEL", "base")   # the model vLLM serves, which the adapters were trained on
    monkeypatch.setenv("FLYWHEEL_LLM_URL", url)
    get_settings.cache_clear()
    FakeVLLM.loaded = []
    FakeVLLM.loading.clear()
    FakeVLLM.may_answer.set()
    yield url
    server.shutdown()
    server.server_close()
    thread.join()


def register(status: str, dataset_version: int = 1, base_model: str = "base") -> models.Adapter:
    with db.connection() as conn:
        adapter = models.register(conn, base_model=base_model, path=f"/adapters/{status}", dataset_version=dataset_version,
                                  hyperparams={"rank": 8}, status="training")
        models.update(conn, adapter.version, status=status, metrics={"eval_loss": 1.5},  # type: ignore[arg-type]
                      error="diverged" if status == "failed" else None)
        return models.get(conn, adapter.version)  # type: ignore[return-value]


def failed_gate(adapter: models.Adapter, reason: str) -> models.Adapter:
    with db.connection() as conn:
        models.update(conn, adapter.version, metrics={"gate": {"passed": False, "reasons": [reason]}})
    return adapter


def live_name() -> str | None:
    with db.connection() as conn:
        adapter = models.live(conn)
    return adapter.name if adapter else None


def test_promote_and_roll_back(vllm: str) -> None:
    first, second = register("ready"), register("ready")
    at = open_page("models")
    assert "Model server healthy" in texts(at) and "Live adapter base model" in texts(at)
    at.selectbox(key="md_adapter").select(first.version).run()
    at.button(key="md_promote").click().run()
    assert not at.error and "flywheel-v1 is live." in texts(at)
    at.selectbox(key="md_adapter").select(second.version).run()
    at.button(key="md_promote").click().run()
    assert live_name() == "flywheel-v2" and FakeVLLM.loaded == ["flywheel-v1", "flywheel-v2"]
    statuses = table(at, "version", "status").set_index("version")["status"].to_dict()
    assert statuses == {2: "live", 1: "retired"}
    at.button(key="md_rollback").click().run()
    assert live_name() == "flywheel-v1" and "flywheel-v1 is live." in texts(at)
    at.button(key="md_rollback").click().run()  # before v1: the base model
    assert live_name() is None and "No adapter is live: the base model answers." in texts(at)
    assert [(e["action"], e["target"]) for e in audit_rows()] == [
        ("model.promote", "adapter:v1"), ("model.promote", "adapter:v2"), ("model.rollback", "adapter:v1"),
        ("model.rollback", "base model")]


def test_roll_back_clicked_on_a_page_older_than_the_last_switch_goes_no_further(vllm: str) -> None:
    first, second = register("ready"), register("ready")
    for adapter in (first, second):
        serving.promote(adapter.version, actor="bob")
    at = open_page("models")   # shows v2 live
    serving.rollback(actor="bob")   # a first click, or another admin, meanwhile: v1 is live
    at.button(key="md_rollback").click().run()
    assert [e.value for e in at.error] == [
        "flywheel-v2 is no longer live (flywheel-v1 is live), so nothing was rolled back: look at the list again."]
    assert live_name() == "flywheel-v1"
    at.button(key="md_rollback").click().run()   # now it means v1
    assert not at.error and live_name() is None


def test_promoting_a_failed_adapter_is_refused_and_nothing_changes(vllm: str) -> None:
    failed = register("failed")
    at = open_page("models")
    at.selectbox(key="md_adapter").select(failed.version).run()
    assert "flywheel-v1 failed: diverged" in [e.value for e in at.error]
    at.button(key="md_promote").click().run()
    assert "Adapter v1 is failed; only a finished adapter can go live." in [e.value for e in at.error]
    assert live_name() is None and FakeVLLM.loaded == [] and audit_rows() == []


def test_an_adapter_that_failed_its_gate_is_promoted_only_when_the_admin_confirms(vllm: str) -> None:
    adapter = failed_gate(register("ready"), "token_f1 0.2100 is worse than 0.3400 by more than 0.0")
    at = open_page("models")
    at.selectbox(key="md_adapter").select(adapter.version).run()
    assert "flywheel-v1 did not pass its eval gate: token_f1 0.2100 is worse than 0.3400 by more than 0.0." in [
        w.value for w in at.warning]
    assert at.button(key="md_promote").disabled
    at.checkbox(key="md_despite_gate_1").check().run()
    other = failed_gate(register("ready"), "rouge_l 0.1000 is worse than 0.3000 by more than 0.0")
    at.run()
    at.selectbox(key="md_adapter").select(other.version).run()   # the tick was for v1's reasons, not v2's
    assert at.button(key="md_promote").disabled and not at.checkbox(key="md_despite_gate_2").value
    at.selectbox(key="md_adapter").select(adapter.version).run()
    at.checkbox(key="md_despite_gate_1").check().run()
    at.button(key="md_promote").click().run()
    assert not at.error and live_name() == "flywheel-v1" and FakeVLLM.loaded == ["flywheel-v1"]
    with pytest.raises(models.GateNotPassed):   # from code too, only when asked to
        serving.promote(other.version, actor="bob")
    assert live_name() == "flywheel-v1"


def test_an_adapter_gated_against_the_base_model_asks_before_it_replaces_a_live_one_it_was_never_compared_with(
        vllm: str, tmp_path: Path) -> None:
    older, newer = register("ready"), register("ready")
    with db.connection() as conn:   # both passed against the base model, each trained while nothing was live
        for adapter in (older, newer):
            (tmp_path / adapter.name).mkdir()
            models.update(conn, adapter.version, path=str(tmp_path / adapter.name),
                          metrics={"gate": {"passed": True, "reasons": [], "baseline_name": "base"}})
    serving.promote(newer.version, actor="bob")
    shutil.rmtree(tmp_path / newer.name)   # cleaned up: vLLM holds it, and it answers all the same
    at = open_page("models")
    at.selectbox(key="md_adapter").select(older.version).run()
    assert ("flywheel-v1 passed its eval gate against the base model, but flywheel-v2 answers now: the two were "
            "never compared.") in [w.value for w in at.warning]
    assert at.button(key="md_promote").disabled
    with pytest.raises(models.GateNotPassed):
        serving.promote(older.version, actor="bob")
    at.checkbox(key="md_despite_gate_1").check().run()
    at.button(key="md_promote").click().run()
    assert not at.error and live_name() == "flywheel-v1"
    at.selectbox(key="md_adapter").select(newer.version).run()   # going back to v2 asks the same
    assert ("flywheel-v2 passed its eval gate against the base model, but flywheel-v1 answers now: the two were "
            "never compared.") in [w.value for w in at.warning]


def test_promoting_while_another_promotion_loads_is_refused_and_changes_nothing(vllm: str) -> None:
    first, second = register("ready"), register("ready")
    FakeVLLM.may_answer.clear()   # the first promotion's load takes its time
    promoting = threading.Thread(target=serving.promote, args=(first.version,), kwargs={"actor": "bob"})
    promoting.start()
    assert FakeVLLM.loading.wait(30)

    at = open_page("models")
    at.selectbox(key="md_adapter").select(second.version).run()
    at.button(key="md_promote").click().run()
    assert [e.value for e in at.error] == ["Another promotion or rollback is under way; try again once it has finished."]

    FakeVLLM.may_answer.set()
    promoting.join(30)
    assert live_name() == "flywheel-v1" and FakeVLLM.loaded == ["flywheel-v1"]
    at.button(key="md_promote").click().run()   # once it is done, the second goes through
    assert not at.error and live_name() == "flywheel-v2"


def test_promoting_an_adapter_trained_on_another_base_model_is_refused(vllm: str) -> None:
    other = register("ready", base_model="meta-llama/Llama-3.1-8B-Instruct")
    at = open_page("models")
    at.selectbox(key="md_adapter").select(other.version).run()
    at.button(key="md_promote").click().run()
    [error] = [e.value for e in at.error]
    assert error.startswith("flywheel-v1 was trained on meta-llama/Llama-3.1-8B-Instruct, but the model server "
                            "runs base (FLYWHEEL_LLM_MODEL)")
    assert live_name() is None and FakeVLLM.loaded == [] and audit_rows() == []


def test_rolling_back_past_an_adapter_of_another_base_model_returns_to_the_base_model(vllm: str) -> None:
    older = register("ready", base_model="meta-llama/Llama-3.1-8B-Instruct")
    with db.connection() as conn:   # live while that model was served
        models.mark_live(conn, older.version, actor="admin")
    newer = register("ready")
    at = open_page("models")
    at.selectbox(key="md_adapter").select(newer.version).run()
    at.button(key="md_promote").click().run()
    assert live_name() == "flywheel-v2"
    at.button(key="md_rollback").click().run()
    assert not at.error and live_name() is None and "No adapter is live: the base model answers." in texts(at)


def test_unreachable_model_server_is_a_clear_error(dashboard_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "local")
    monkeypatch.setenv("FLYWHEEL_LLM_MODEL", "base")
    monkeypatch.setenv("FLYWHEEL_LLM_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    get_settings.cache_clear()
    ready = register("ready")
    at = open_page("models")
    assert "Model server unreachable" in texts(at)
    at.selectbox(key="md_adapter").select(ready.version).run()
    at.button(key="md_promote").click().run()
    [error] = [e.value for e in at.error]
    assert error.startswith("Could not reach the model server at http://127.0.0.1:9")
    assert live_name() is None and audit_rows() == []


def test_a_live_adapter_the_model_server_lost_is_named_and_can_be_loaded_again(
        dashboard_db: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_lora_adapter(tiny_model_dir, tmp_path / "v1", seed=3)
    with serve_llm(tiny_model_dir) as url:
        with db.connection() as conn:   # live, but the server started without it (database out of reach then)
            live = models.register(conn, base_model=str(tiny_model_dir), path=str(path), dataset_version=1,
                                   hyperparams={"rank": 4}, status="ready")
            models.mark_live(conn, live.version, actor="admin")
        monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "local")
        monkeypatch.setenv("FLYWHEEL_LLM_URL", url)
        monkeypatch.setenv("FLYWHEEL_LLM_MODEL", str(tiny_model_dir))
        get_settings.cache_clear()
        at = open_page("models")
        lost = (f"The model server does not hold the live adapter {live.name} (restarted without it?), so it "
                f"answers with the base model. Promote {live.name} again to load it.")
        assert lost in [w.value for w in at.warning]
        at.button(key="md_promote").click().run()
        assert f"{live.name} is live." in texts(at) and lost not in [w.value for w in at.warning]
        assert serving.answers_with_adapter(url, live.name)


def test_serve_the_base_model_skips_every_earlier_adapter(vllm: str) -> None:
    first, second = register("ready"), register("ready")
    for adapter in (first, second):
        serving.promote(adapter.version, actor="bob")
    at = open_page("models")
    at.button(key="md_base").click().run()
    assert not at.error and "No adapter is live: the base model answers." in texts(at)
    assert live_name() is None and at.button(key="md_base").disabled and at.button(key="md_rollback").disabled
    assert [(e["action"], e["target"]) for e in audit_rows()][-1] == ("model.rollback", "base model")


def test_the_model_servers_address_is_shown_without_its_credentials(vllm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_LLM_URL", vllm.replace("http://", "http://admin:s3cret@") + "/?key=abc123")
    get_settings.cache_clear()
    page = texts(open_page("models"))
    assert "Model server at http://admin:***@127.0.0.1" in page
    assert "s3cret" not in page and "abc123" not in page
