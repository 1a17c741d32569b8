"""The TGI client against a scripted server speaking TGI's wire format: retries, error mapping,
and the guard against TGI's silent fallback to the base model on an unknown adapter."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.llm.base import ChatMessage, InvalidRequest, LLMError, RateLimited, UnknownAdapter
from core.llm.tgi import TGIGenerator
from support.servers import CHAT_OK, ScriptedTGI

HI = [ChatMessage("user", "hi")]
OVERLOADED = (429, {"retry-after": "0.05"}, {"error": "Model is overloaded", "error_type": "overloaded"})
UNAVAILABLE = (503, {}, {"error": "no backend", "error_type": "unhealthy"})
OK = (200, {}, CHAT_OK)


def _client(url: str, **kwargs: object) -> TGIGenerator:
    return TGIGenerator(url, backoff_s=0.01, **kwargs)  # type: ignore[arg-type]


def test_rate_limit_then_success_is_retried_after_retry_after() -> None:
    fake = ScriptedTGI([OVERLOADED, OK])
    with fake.running() as url:
        reply = _client(url).chat(HI)
    assert reply.text == "ok [1]" and len(fake.requests) == 2


def test_unavailable_twice_then_success() -> None:
    fake = ScriptedTGI([UNAVAILABLE, UNAVAILABLE, OK])
    with fake.running() as url:
        assert _client(url).chat(HI).completion_tokens == 2
    assert len(fake.requests) == 3


def test_persistent_rate_limit_gives_up_after_bounded_retries() -> None:
    fake = ScriptedTGI([OVERLOADED])
    with fake.running() as url, pytest.raises(RateLimited, match="overloaded"):
        _client(url, max_retries=3).chat(HI)
    assert len(fake.requests) == 4


@pytest.mark.parametrize("status, error", [(422, InvalidRequest), (424, LLMError)])
def test_client_errors_are_not_retried_and_say_what_happened(status: int, error: type[LLMError]) -> None:
    fake = ScriptedTGI([(status, {}, {"error": "Input validation error: inputs too long", "error_type": "validation"})])
    with fake.running() as url, pytest.raises(error, match="inputs too long") as raised:
        _client(url).chat(HI)
    assert type(raised.value) is error and len(fake.requests) == 1


def test_the_raw_generate_route_is_retried_and_its_errors_mapped_as_chat_is() -> None:
    # huggingface_hub raises its own OverloadedError / ValidationError for /generate, without the response
    details = {"generated_text": "x", "details": {"finish_reason": "length", "generated_tokens": 1, "prefill": [],
                                                 "tokens": [{"id": 1, "text": "x", "logprob": -0.5, "special": False}]}}
    fake = ScriptedTGI([OVERLOADED, (200, {}, details)])
    with fake.running() as url:
        assert _client(url).generate("hi").generated_text == "x"
    assert len(fake.requests) == 2
    refused = ScriptedTGI([(422, {}, {"error": "Input validation error: inputs too long", "error_type": "validation"})])
    with refused.running() as url, pytest.raises(InvalidRequest, match="inputs too long"):
        _client(url).generate("hi")


def test_an_adapter_vllm_lost_in_a_restart_is_an_unknown_adapter() -> None:
    # vLLM answers a runtime-loaded adapter it no longer has as an unknown model, in OpenAI's format
    fake = ScriptedTGI([(404, {}, {"object": "error", "type": "NotFoundError", "code": 404,
                                   "message": "The model `flywheel-v3` does not exist."})])
    with fake.running() as url, pytest.raises(UnknownAdapter, match="flywheel-v3"):
        _client(url).chat(HI, adapter_id="flywheel-v3")


def test_adapter_the_server_was_not_started_with_is_refused_before_sending() -> None:
    fake = ScriptedTGI([OK])
    with fake.running() as url:
        client = _client(url, known_adapters=lambda: {"flywheel-v1"})
        with pytest.raises(UnknownAdapter, match="'flywheel-v2' is not loaded"):
            client.chat(HI, adapter_id="flywheel-v2")
        assert fake.requests == []
        client.chat(HI, adapter_id="flywheel-v1")
    assert fake.requests[0]["body"]["model"] == "flywheel-v1"  # TGI's chat route takes the adapter in `model`


def test_generate_sends_adapter_id_and_details() -> None:
    body = {"generated_text": " five", "details": {"finish_reason": "length", "generated_tokens": 1, "prefill": [],
                                                   "tokens": [{"id": 1, "text": " five", "logprob": -0.1, "special": False}]}}
    fake = ScriptedTGI([(200, {}, body)])
    with fake.running() as url:
        out = _client(url, known_adapters=lambda: {"flywheel-v1"}).generate("Laptops ship in", adapter_id="flywheel-v1")
    assert out.details.tokens[0].text == " five"
    sent = fake.requests[0]["body"]["parameters"]
    assert sent["adapter_id"] == "flywheel-v1" and sent["details"] is True


def test_adapters_are_loaded_and_smoke_checked_with_the_servers_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from core import serving
    from core.config import get_settings

    monkeypatch.setenv("FLYWHEEL_LLM_API_KEY", "sk-vllm-123456")
    get_settings.cache_clear()
    details = {"generated_text": "x", "details": {"finish_reason": "length", "generated_tokens": 1, "prefill": [],
                                                 "tokens": [{"id": 1, "text": "x", "logprob": -0.5, "special": False}]}}
    fake = ScriptedTGI([(200, {}, {}), (200, {}, details)])
    try:
        with fake.running() as url:
            serving.load_adapter("flywheel-v2", "/adapters/v2", url, "openai")  # vLLM's --api-key guards /v1/*
            assert serving.first_token_logprobs(url, "flywheel-v2") == [-0.5]
    finally:
        get_settings.cache_clear()
    assert [(r["path"], r["authorization"]) for r in fake.requests] == [
        ("/v1/load_lora_adapter", "Bearer sk-vllm-123456"), ("/generate", "Bearer sk-vllm-123456")]


def test_vllm_reloads_an_adapter_name_in_place_while_its_files_are_there(tmp_path: Path) -> None:
    """After a database reset the new flywheel-v1 is written where the old one was: vLLM, which
    answers "already loaded" to a name it holds, must load it again, in place."""
    from core import serving

    folder = tmp_path / "flywheel-v1"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    already = (400, {}, {"object": "error", "message": "The lora adapter 'flywheel-v1' has already been loaded.",
                         "type": "InvalidUserInput", "code": 400})
    fake = ScriptedTGI([(200, {}, {}), already])
    with fake.running() as url:
        serving.load_adapter("flywheel-v1", str(folder), url, "openai")
        shutil.rmtree(folder)   # cleaned up since: a rollback to it needs what vLLM holds, as it is
        serving.load_adapter("flywheel-v1", str(folder), url, "openai")
    assert [r["body"] for r in fake.requests] == [
        {"lora_name": "flywheel-v1", "lora_path": str(folder), "load_inplace": True},
        {"lora_name": "flywheel-v1", "lora_path": str(folder)}]


def test_the_machines_hugging_face_token_never_goes_to_the_model_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import Settings
    from core.llm.backends import make_generator

    monkeypatch.setenv("HF_TOKEN", "hf_operators_own_token_0123456789")
    fake = ScriptedTGI([OK])
    with fake.running() as url:
        for backend in ("local", "tgi", "openai"):
            generator = make_generator(Settings(_env_file=None, llm_backend=backend, llm_url=url, llm_model="m"))
            generator.chat(HI)   # type: ignore[union-attr]
        keyed = make_generator(Settings(_env_file=None, llm_backend="local", llm_url=url, llm_api_key="sk-proxy-1"))
        keyed.chat(HI)   # type: ignore[union-attr]
    sent = [r["authorization"] for r in fake.requests]
    assert not any("hf_operators_own_token" in (a or "") for a in sent), sent
    assert sent[-1] == "Bearer sk-proxy-1"   # a key the operator set is sent, on the local backend too
