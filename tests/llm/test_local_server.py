"""The local generation server over real HTTP: TGI's contract, adapters, errors."""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.llm.base import BackendUnavailable, ChatMessage, UnknownAdapter, adapter_files_stamp
from core.llm.tgi import TGIGenerator
from support.openapi import validate
from support.servers import decoded_tokens, free_port, serve_llm
from support.tiny_model import make_lora_adapter, register_ready_adapter

PROMPT = {"inputs": "Northwind laptops ship in", "parameters": {"max_new_tokens": 6, "details": True}}


def _sse(response: httpx.Response) -> list[dict]:
    return [json.loads(line[5:]) for line in response.text.splitlines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def test_every_route_answers_in_tgi_shapes(tiny_server: str) -> None:
    assert httpx.get(f"{tiny_server}/health").status_code == 200
    validate(httpx.get(f"{tiny_server}/info").json(), "Info")
    validate(httpx.get(f"{tiny_server}/v1/models").json(), "ModelInfo")
    generated = httpx.post(f"{tiny_server}/generate", json=PROMPT, timeout=60).json()
    validate(generated, "GenerateResponse")
    assert generated["details"]["generated_tokens"] == 6 and generated["details"]["finish_reason"] == "length"
    events = _sse(httpx.post(f"{tiny_server}/generate_stream", json=PROMPT, timeout=60))
    for event in events:
        validate(event, "StreamResponse")
    assert len(events) == 6 and events[-1]["generated_text"] == generated["generated_text"]
    validate(events[-1]["details"], "StreamDetails")
    chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
    validate(httpx.post(f"{tiny_server}/v1/chat/completions", json=chat, timeout=60).json(), "ChatCompletion")
    chunks = _sse(httpx.post(f"{tiny_server}/v1/chat/completions", json={**chat, "stream": True}, timeout=60))
    for chunk in chunks:
        validate(chunk, "ChatCompletionChunk")
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    parts = {**chat, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}], "seed": 1}
    as_parts = httpx.post(f"{tiny_server}/v1/chat/completions", json=parts, timeout=60).json()   # MessageContent
    validate(as_parts, "ChatCompletion")
    as_text = httpx.post(f"{tiny_server}/v1/chat/completions", json={**chat, "seed": 1}, timeout=60).json()
    assert as_parts["choices"][0]["message"] == as_text["choices"][0]["message"]   # the same prompt
    image = {**chat, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    refused = httpx.post(f"{tiny_server}/v1/chat/completions", json=image, timeout=60)
    assert refused.status_code == 422 and "text only" in refused.json()["error"]


def test_bad_requests_are_422_in_tgi_error_shape(tiny_server: str) -> None:
    too_long = httpx.post(f"{tiny_server}/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 10**6}})
    assert too_long.status_code == 422 and "max_new_tokens" in too_long.json()["error"]
    validate(too_long.json(), "ErrorResponse")
    no_inputs = httpx.post(f"{tiny_server}/generate", json={"parameters": {}})
    assert no_inputs.status_code == 422
    validate(no_inputs.json(), "ErrorResponse")
    hello = [{"role": "user", "content": "hi"}]
    for route, body in [("/generate", {"inputs": ""}), ("/generate", {"inputs": "hi", "parameters": {"stop": [""]}}),
                        ("/v1/chat/completions", {"messages": hello, "stop": list("abcde")}),
                        ("/v1/chat/completions", {"messages": hello, "seed": -1})]:
        refused = httpx.post(f"{tiny_server}{route}", json=body)
        assert refused.status_code == 422, (route, body, refused.text)  # a 500 reads as "server down" to clients
        validate(refused.json(), "ErrorResponse")


def test_a_client_that_goes_away_stops_its_generation_and_frees_the_model(tiny_server: str) -> None:
    long = {"inputs": "Northwind laptops ship in", "parameters": {"max_new_tokens": 2000}}
    chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2000, "stream": True}
    before = decoded_tokens(tiny_server)
    for route, body in [("/generate_stream", long), ("/v1/chat/completions", chat)]:
        with httpx.stream("POST", f"{tiny_server}{route}", json=body, timeout=60) as dropped:
            next(line for line in dropped.iter_lines() if line.startswith("data:"))  # one token, then gone
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{tiny_server}/generate", json=long, timeout=0.2)
    answered = httpx.post(f"{tiny_server}/generate", json=PROMPT, timeout=60)  # queued behind all three
    assert answered.status_code == 200 and answered.json()["details"]["generated_tokens"] == 6
    # Had any of the three decoded on to its 2,000 tokens, this would be over 2,000.
    assert decoded_tokens(tiny_server) - before < 2000


def test_tgi_client_chats_generates_and_streams(tiny_server: str) -> None:
    client = TGIGenerator(tiny_server)
    reply = client.chat([ChatMessage("user", "Hello")], max_new_tokens=4)
    assert reply.completion_tokens == 4 and reply.prompt_tokens and reply.adapter_id is None
    detailed = client.generate("Northwind laptops ship in", max_new_tokens=3)
    assert len(detailed.details.tokens) == 3 and all(t.logprob <= 0 for t in detailed.details.tokens)
    assert "".join(client.stream([ChatMessage("user", "Hello")], max_new_tokens=4)) == reply.text
    assert client.health()


def _generate(url: str, **parameters: Any) -> dict[str, Any]:
    body = {"inputs": "Northwind laptops ship in", "parameters": {"max_new_tokens": 8, "details": True, **parameters}}
    response = httpx.post(f"{url}/generate", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_sampling_is_switched_on_as_tgi_switches_it_and_a_drawn_seed_is_reported_to_have_the_answer_again(
        tiny_server: str) -> None:
    greedy = _generate(tiny_server)
    assert greedy["details"]["seed"] is None
    assert _generate(tiny_server, temperature=1.0, seed=7) == greedy   # nothing that changes a distribution
    for switch in ({"do_sample": True}, {"top_k": 50}, {"top_p": 0.9}, {"temperature": 0.7}):
        assert _generate(tiny_server, **switch, seed=1)["generated_text"] != greedy["generated_text"], switch
        first, second = _generate(tiny_server, **switch), _generate(tiny_server, **switch)
        assert None is not first["details"]["seed"] != second["details"]["seed"] is not None
        assert _generate(tiny_server, **switch, seed=first["details"]["seed"]) == first


def test_the_chat_route_samples_unless_the_temperature_is_0_and_flywheels_client_asks_for_0(tiny_server: str) -> None:
    def chat(**fields: Any) -> str:
        body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, **fields}
        return httpx.post(f"{tiny_server}/v1/chat/completions", json=body, timeout=60).json()[
            "choices"][0]["message"]["content"]

    greedy = chat(temperature=0)
    assert chat(seed=1) != greedy   # as TGI and OpenAI: no temperature is temperature 1
    assert TGIGenerator(tiny_server).chat([ChatMessage("user", "Hello")], max_new_tokens=8).text == greedy
    assert "".join(TGIGenerator(tiny_server).stream([ChatMessage("user", "Hello")], max_new_tokens=8)) == greedy


def test_a_repetition_penalty_keeps_an_answer_from_repeating_its_tokens(tiny_server: str) -> None:
    plain = [t["id"] for t in _generate(tiny_server, max_new_tokens=24)["details"]["tokens"]]
    assert len(set(plain)) < len(plain)   # the tiny random model repeats itself
    penalised = [t["id"] for t in _generate(tiny_server, max_new_tokens=24, repetition_penalty=1e4)["details"]["tokens"]]
    assert len(set(penalised)) == len(penalised)


def test_adapter_loaded_while_serving_changes_only_its_own_answers(tiny_server: str, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    client = TGIGenerator(tiny_server)
    before = client.generate("Northwind laptops ship in", max_new_tokens=8)
    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    loaded = httpx.post(f"{tiny_server}/adapters", json={"adapter_id": "test-v1", "path": str(adapter)}, timeout=60)
    assert loaded.status_code == 200 and "test-v1" in loaded.json()["adapters"]
    with_adapter = client.generate("Northwind laptops ship in", adapter_id="test-v1", max_new_tokens=8)
    base_after = client.generate("Northwind laptops ship in", max_new_tokens=8)
    assert [t.logprob for t in with_adapter.details.tokens] != [t.logprob for t in before.details.tokens]
    assert base_after.generated_text == before.generated_text
    assert [t.logprob for t in base_after.details.tokens] == pytest.approx([t.logprob for t in before.details.tokens])
    chat = client.chat([ChatMessage("user", "Hello")], adapter_id="test-v1", max_new_tokens=3)
    assert chat.model == "test-v1"
    assert httpx.delete(f"{tiny_server}/adapters/test-v1").status_code == 200
    # Without its last adapter the server answers as the base model again (not a 500), and takes a new one.
    unloaded = client.generate("Northwind laptops ship in", max_new_tokens=8)
    assert [t.logprob for t in unloaded.details.tokens] == pytest.approx([t.logprob for t in before.details.tokens])
    reloaded = httpx.post(f"{tiny_server}/adapters", json={"adapter_id": "test-v1", "path": str(adapter)}, timeout=60)
    assert reloaded.status_code == 200
    again = client.generate("Northwind laptops ship in", adapter_id="test-v1", max_new_tokens=8)
    assert [t.logprob for t in again.details.tokens] == pytest.approx([t.logprob for t in with_adapter.details.tokens])
    assert httpx.delete(f"{tiny_server}/adapters/test-v1").status_code == 200


def test_unknown_adapter_is_refused_not_silently_served_by_the_base(tiny_server: str) -> None:
    response = httpx.post(f"{tiny_server}/generate", json={"inputs": "hi", "parameters": {"adapter_id": "nope"}})
    assert response.status_code == 422 and "Unknown adapter 'nope'" in response.json()["error"]
    with pytest.raises(UnknownAdapter, match="nope"):
        TGIGenerator(tiny_server).chat([ChatMessage("user", "hi")], adapter_id="nope")
    missing = httpx.post(f"{tiny_server}/adapters", json={"adapter_id": "x", "path": "/no/such/folder"})
    assert missing.status_code == 422 and "adapter_config.json" in missing.json()["error"]


def test_nothing_listening_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="cannot be reached"):
        TGIGenerator(f"http://127.0.0.1:{free_port()}", timeout=5).chat([ChatMessage("user", "hi")])


@pytest.mark.slow
def test_smollm2_answers_a_handbook_question_from_its_context(smollm2_dir: Path) -> None:
    context = ("[1] Laptops > Requesting a new laptop\nDelivery takes five working days in Lisbon and seven "
               "working days in Toronto.")
    with serve_llm(smollm2_dir) as url:
        reply = TGIGenerator(url).chat([
            ChatMessage("system", f"Answer using only the context. Cite [1].\n\nContext:\n{context}"),
            ChatMessage("user", "How many working days does laptop delivery take in Lisbon?"),
        ], max_new_tokens=40)
    assert "five" in reply.text.lower() or "5" in reply.text
    assert reply.model == "SmolLM2-135M-Instruct"


def test_draining_keeps_an_idle_server_until_every_process_has_reread_the_live_adapter(tiny_server: str) -> None:
    from core import tgi_controller

    started = time.monotonic()
    assert tgi_controller.drain(tiny_server, timeout_s=30, quiet_s=0.1, min_wait_s=0.5)
    assert time.monotonic() - started >= 0.5  # idle at once, but kept for a missed notification's re-read
    assert tgi_controller.drain(f"http://127.0.0.1:{free_port()}", timeout_s=30, min_wait_s=0.5)  # gone: done


def test_a_restarted_server_answers_with_the_live_adapter_again(database_url: str, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    from core import db, models, serving

    adapter = register_ready_adapter(tiny_model_dir, tmp_path / "adapter")
    with db.connection() as conn:
        models.mark_live(conn, adapter.version, actor="admin")  # promoted before the restart
    with serve_llm(tiny_model_dir) as url:
        assert serving.answers_with_adapter(url, adapter.name)


def test_a_restarted_server_on_the_embedded_database_answers_with_the_live_adapter_again(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import db, models, serving
    from core.config import get_settings

    monkeypatch.delenv("DATABASE_URL", raising=False)   # as `make up` runs: Postgres under the data folder
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        adapter = register_ready_adapter(tiny_model_dir, tmp_path / "adapter")
        with db.connection() as conn:
            models.mark_live(conn, adapter.version, actor="admin")
        with serve_llm(tiny_model_dir) as url:
            assert serving.answers_with_adapter(url, adapter.name)
    finally:
        db.close_pools()
        get_settings.cache_clear()


def test_a_live_adapter_whose_files_are_damaged_does_not_stop_the_server_starting(
        database_url: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    from core import db, models

    adapter = register_ready_adapter(tiny_model_dir, tmp_path / "adapter")
    (Path(adapter.path) / "adapter_model.safetensors").write_bytes(b"cut short")
    with db.connection() as conn:
        models.mark_live(conn, adapter.version, actor="admin")
    with serve_llm(tiny_model_dir) as url:   # it answers, with the base model
        assert httpx.get(f"{url}/adapters", timeout=10).json() == {"adapters": []}
        assert httpx.post(f"{url}/generate", json=PROMPT, timeout=30).status_code == 200


def _ready_adapters(tiny_model_dir: Path, tmp_path: Path, *, seeds: tuple[int, ...]) -> list[Any]:
    """Registered, finished adapter versions of the tiny model, each changing its output."""
    return [register_ready_adapter(tiny_model_dir, tmp_path / f"v{seed}", seed=seed) for seed in seeds]


def _served_by(url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flywheel's settings pointed at the local server at `url`, serving the tiny model."""
    from core.config import get_settings

    monkeypatch.setenv("FLYWHEEL_LLM_URL", url)
    monkeypatch.setenv("FLYWHEEL_LLM_MODEL", str(tiny_model_dir))
    get_settings.cache_clear()


def test_rolling_back_needs_no_files_while_the_server_holds_the_adapter_and_the_base_model_is_the_way_out_after(
        database_url: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from core import audit, db, models, serving
    from core.cli import app

    v1, v2 = _ready_adapters(tiny_model_dir, tmp_path, seeds=(3, 4))
    with serve_llm(tiny_model_dir) as url:
        _served_by(url, tiny_model_dir, monkeypatch)
        serving.promote(v1.version, actor="admin")
        serving.promote(v2.version, actor="admin")
        shutil.rmtree(v1.path)   # cleaned up since; the server still holds it
        rolled_back = serving.rollback(actor="admin")
        assert rolled_back is not None and rolled_back.name == v1.name
        assert serving.answers_with_adapter(url, v1.name)

        serving.promote(v2.version, actor="admin")
        # Now the server no longer holds v1 either (restarted since, say): a rollback cannot load it.
        assert httpx.delete(f"{url}/adapters/{v1.name}", timeout=10).status_code == 200
        refused = CliRunner().invoke(app, ["models", "rollback", "--as", "alice"])
        assert refused.exit_code == 2 and "no adapter_config.json" in refused.output
        with db.connection() as conn:
            assert models.live(conn).name == v2.name   # type: ignore[union-attr]
        to_base = CliRunner().invoke(app, ["models", "rollback", "--to-base", "--as", "alice"])
        assert to_base.exit_code == 0 and "the base model answers" in to_base.output
        with db.connection() as conn:
            assert models.live(conn) is None
            assert [(e.action, e.target, e.actor) for e in audit.recent(conn)][0] == ("model.rollback", "base model", "alice")


def test_an_adapter_name_written_again_with_new_files_is_loaded_again_not_served_from_the_old_ones(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a database reset version numbers start again, and the trainer writes the new
    flywheel-v1 into the folder the old one came from: the server must not keep the old weights."""
    from core import serving

    posted: list[str] = []
    real_post = httpx.post

    def recording_post(url: str, **kwargs: Any) -> httpx.Response:
        posted.append(url.rsplit("/", 1)[-1])
        return real_post(url, **kwargs)

    monkeypatch.setattr(httpx, "post", recording_post)
    folder = make_lora_adapter(tiny_model_dir, tmp_path / "flywheel-v1", seed=3)
    with serve_llm(tiny_model_dir) as url:
        serving.load_adapter("flywheel-v1", str(folder), url, "local")
        old = serving.first_token_logprobs(url, "flywheel-v1")
        serving.load_adapter("flywheel-v1", str(folder), url, "local")   # the same files: kept as they are
        assert posted.count("adapters") == 1
        assert serving.first_token_logprobs(url, "flywheel-v1") == old

        shutil.rmtree(folder)
        make_lora_adapter(tiny_model_dir, folder, seed=5)   # the new flywheel-v1, trained after the reset
        serving.load_adapter("reference", str(make_lora_adapter(tiny_model_dir, tmp_path / "ref", seed=5)),
                             url, "local")
        serving.load_adapter("flywheel-v1", str(folder), url, "local")
        assert serving.first_token_logprobs(url, "flywheel-v1") == serving.first_token_logprobs(url, "reference")
        assert serving.first_token_logprobs(url, "flywheel-v1") != old


def test_serve_llm_names_a_model_or_adapter_it_cannot_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from core.cli import app

    for args, message in [(["--model", str(tmp_path / "missing")], "is not a model folder (no config.json)"),
                          (["--model", str(tmp_path)], "is not a model folder (no config.json)"),
                          (["--model", str(tiny_model_dir), "--adapter", "v1"], "expects NAME=PATH"),
                          (["--model", str(tiny_model_dir), "--adapter", f"v1={tmp_path}"],
                           "cannot load the adapter 'v1'"),
                          (["--model", str(tiny_model_dir), "--host", "0.0.0.0"],   # anyone could swap adapters
                           "refusing to serve on 0.0.0.0 without FLYWHEEL_LLM_API_KEY")]:
        refused = CliRunner().invoke(app, ["serve-llm", *args, "--port", str(free_port())],
                                     env={"COLUMNS": "400"})  # the whole message on one line of the error box
        assert refused.exit_code == 2 and message in refused.output, (args, refused.output)


def test_an_adapter_that_fails_to_load_changes_no_answer_and_says_why(tiny_model_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from core.llm.local_model import LocalModel
    from core.llm.server import create_app

    good, other = make_lora_adapter(tiny_model_dir, tmp_path / "v1", seed=3), make_lora_adapter(
        tiny_model_dir, tmp_path / "v1b", seed=4)
    damaged = tmp_path / "damaged"
    shutil.copytree(good, damaged)
    (damaged / "adapter_model.safetensors").write_bytes(b"not safetensors")   # a copy cut short
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(good / "adapter_config.json", no_weights)

    def text(client: TestClient, adapter: str | None = None) -> str:
        parameters = {**PROMPT["parameters"], **({"adapter_id": adapter} if adapter else {})}
        answer = client.post("/generate", json={**PROMPT, "parameters": parameters})
        assert answer.status_code == 200, answer.text
        return answer.json()["generated_text"]

    with TestClient(create_app(LocalModel(tiny_model_dir))) as client:
        base = text(client)
        for folder, why in [(damaged, "SafetensorError"), (no_weights, "no adapter weights")]:
            refused = client.post("/adapters", json={"adapter_id": "v1", "path": str(folder)})
            assert refused.status_code == 422 and why in refused.json()["error"], refused.text
            assert text(client) == base and client.get("/adapters").json() == {"adapters": []}

        assert client.post("/adapters", json={"adapter_id": "v1", "path": str(good)}).status_code == 200
        tuned = text(client, "v1")
        assert tuned != base
        refused = client.post("/adapters", json={"adapter_id": "v1", "path": str(damaged)})   # loaded again, badly
        assert refused.status_code == 422
        assert (text(client, "v1"), text(client)) == (tuned, base)
        assert client.get("/adapters").json() == {
            "adapters": [{"adapter_id": "v1", "path": str(good), "files": adapter_files_stamp(good)}]}

        assert client.post("/adapters", json={"adapter_id": "v1", "path": str(other)}).status_code == 200
        assert text(client, "v1") not in (tuned, base) and text(client) == base   # new files under the same id


def test_a_generation_that_fails_is_reported_in_tgi_error_shapes_and_the_server_goes_on(
        tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from core.llm.local_model import AdapterNotLoaded, LocalModel, TokenOut
    from core.llm.server import create_app

    model = LocalModel(tiny_model_dir)
    fault: list[Exception] = []
    decode = model._decode

    def failing_after_one_token(*args: object) -> Iterator[object]:
        for item in decode(*args):  # type: ignore[arg-type]
            yield item
            if fault and isinstance(item, TokenOut):
                raise fault[0]  # fault injection: what a GPU out of memory mid-generation looks like

    monkeypatch.setattr(model, "_decode", failing_after_one_token)
    chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
    with TestClient(create_app(model)) as client:
        fault.append(RuntimeError("CUDA out of memory"))
        for route, body in [("/generate", PROMPT), ("/v1/chat/completions", chat)]:
            failed = client.post(route, json=body)
            assert failed.status_code == 424 and "CUDA out of memory" in failed.json()["error"]
            validate(failed.json(), "ErrorResponse")
        for route, body in [("/generate_stream", PROMPT), ("/v1/chat/completions", {**chat, "stream": True})]:
            events = _sse(client.post(route, json=body))
            assert events[-1] == {"error": "Request failed during generation: CUDA out of memory",
                                  "error_type": "generation"}
        fault[0] = AdapterNotLoaded("support-v9")  # unloaded while the request waited its turn
        gone = client.post("/generate", json=PROMPT)
        assert gone.status_code == 422 and "Unknown adapter 'support-v9'" in gone.json()["error"]
        fault.clear()
        assert client.post("/generate", json=PROMPT).json()["details"]["generated_tokens"] == 6


def test_the_local_server_lets_go_of_adapters_no_request_needs_after_each_switch(
        database_url: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import serving

    def held() -> list[str]:
        return sorted(a["adapter_id"] for a in httpx.get(f"{url}/adapters", timeout=10).json()["adapters"])

    v1, v2, v3 = _ready_adapters(tiny_model_dir, tmp_path, seeds=(3, 4, 5))
    mine = make_lora_adapter(tiny_model_dir, tmp_path / "mine", seed=6)
    with serve_llm(tiny_model_dir, "--adapter", f"mine={mine}") as url:
        _served_by(url, tiny_model_dir, monkeypatch)
        for v in (v1, v2, v3):
            serving.promote(v.version, actor="admin")
        # v3 live, v2 what it replaced and the rollback target; v1 is needed by no request.
        assert held() == ["flywheel-v2", "flywheel-v3", "mine"]
        assert serving.rollback(actor="admin").name == v2.name   # type: ignore[union-attr]
        assert held() == ["flywheel-v2", "flywheel-v3", "mine"]   # v3: what the rollback replaced
        assert serving.rollback(actor="admin").name == v1.name   # type: ignore[union-attr]  # loaded again
        assert held() == ["flywheel-v1", "flywheel-v2", "mine"]
        assert serving.rollback(actor="admin") is None           # the base model answers
        assert held() == ["flywheel-v1", "mine"]   # what the last rollback replaced, and the hand-loaded one
        assert serving.answers_with_adapter(url, "mine")


def test_with_an_api_key_the_server_asks_every_caller_but_health_checks_for_it(
        tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_LLM_API_KEY", "sk-local-0123456789")
    with serve_llm(tiny_model_dir) as url:
        chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
        refused = [httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=60),
                   httpx.delete(f"{url}/adapters/flywheel-v1", timeout=60),
                   httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=60,
                              headers={"authorization": "Bearer wrong"})]
        assert [r.status_code for r in refused] == [401, 401, 401]
        assert httpx.get(f"{url}/health").status_code == 200
        answered = TGIGenerator(url, api_key="sk-local-0123456789").chat([ChatMessage("user", "Hello")],
                                                                          max_new_tokens=2)
        assert answered.completion_tokens == 2


def test_an_adapter_unloaded_while_requests_wait_for_it_answers_them_then_goes(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """A promotion lets go of the adapter two switches back at once; requests sent with it before
    (queued behind a long generation on a CPU) must still get their answers from it."""
    import asyncio
    import threading

    from core.llm.local_model import AdapterNotLoaded, GenerationParams, LocalModel, TokenOut

    model = LocalModel(tiny_model_dir)
    model.load_adapter("flywheel-v1", make_lora_adapter(tiny_model_dir, tmp_path / "v1", seed=3))
    ids, params = model.prompt_ids("Northwind laptops ship in"), GenerationParams(max_new_tokens=8)

    async def tokens(stream: Any) -> list[int]:
        return [t.id async for t in stream if isinstance(t, TokenOut)]

    async def unloaded_while_queued() -> None:
        answer = await tokens(model.generate(ids, params, "flywheel-v1"))
        with model._lock:   # a generation in flight: the next ones wait their turn
            queued = model.generate(ids, params, "flywheel-v1")
            unloading = threading.Thread(target=model.unload_adapter, args=("flywheel-v1",))
            unloading.start()
            unloading.join(10)
            assert not unloading.is_alive()   # refused to new requests at once, not after the generation
            late = model.generate(ids, params, "flywheel-v1")   # sent after the unload
        assert await tokens(queued) == answer
        with pytest.raises(AdapterNotLoaded):
            await tokens(late)

    asyncio.run(unloaded_while_queued())
    assert not model._loaded_as   # dropped on the decode thread, after the queued request and before `late`
    assert model.adapters == {} and not hasattr(model.model, "peft_config")   # back to the plain base model
