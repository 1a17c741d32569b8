"""Promotion on the serving side: load an adapter into the running model server, prove it
answers with the adapter (not silently with the base model), then make it live in the registry.

Per backend: our local server loads adapters while serving (`POST /adapters`); vLLM does
with `/v1/load_lora_adapter`; TGI loads adapters only at start-up, so a new TGI is started
with the new `LORA_ADAPTERS` by `core.tgi_controller` and traffic switches to it. Adapters
already loaded stay loaded, so requests in flight finish on the adapter they started with,
and a rollback on the local server or vLLM is only a switch."""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from core import db, models, tgi_controller
from core.config import Settings, get_settings
from core.llm.base import adapter_files_stamp

logger = logging.getLogger(__name__)

SMOKE_PROMPT = "Question: How do I reset my password?\nAnswer:"
# Any fixed 64-bit number: a promotion or rollback holds this lock while it runs.
PROMOTION_LOCK_KEY = 7_146_392_002


class ServingError(RuntimeError):
    """The serving backend could not load or serve the adapter; nothing was switched."""


def serving_url(settings: Settings | None = None) -> str:
    """Where generation requests go now (`effective_url` of the endpoint on record)."""
    settings = settings or get_settings()
    if settings.llm_backend != "tgi":
        return settings.llm_url
    with db.connection() as conn:
        endpoint = models.endpoint(conn)
    return effective_url(endpoint.url if endpoint else None, settings)


def effective_url(started: str | None, settings: Settings) -> str:
    """The TGI a promotion started (`started`, from the endpoint row) while the backend is TGI,
    else the configured URL: a server started for TGI is not the one to use for another backend."""
    return started if started and settings.llm_backend == "tgi" else settings.llm_url


def live_adapter_for(base_model: str, settings: Settings | None = None) -> models.Adapter | None:
    """The live adapter, when it was trained on `base_model` and its files are on this machine:
    what our model server loads at start-up, so that after a restart it still answers with it.
    None for a stand-alone server (no DATABASE_URL and no embedded database under the data
    folder: none is made for it) or when the database cannot be read."""
    settings = settings or get_settings()
    if settings.database_url is None and not (settings.pg_dir / "PG_VERSION").exists():
        return None
    try:
        with db.connection() as conn:
            live = models.live(conn)
    except Exception as e:   # unreachable, or an embedded database that cannot start: serve all the same
        logger.warning("cannot read the live adapter (%s): serving the base model until a promotion loads one", e)
        return None
    if live is None:
        return None
    if not fits(live, base_model):
        logger.warning("the live adapter %s (base %s, files %s) does not fit this server's model %s or its files "
                       "are missing here: serving the base model until a promotion loads one",
                       live.name, live.base_model, live.path, base_model)
        return None
    return live


def fits(adapter: models.Adapter, base_model: str) -> bool:
    """Whether `adapter` can run on `base_model` here: trained on it, and its files on this machine."""
    return same_model(adapter.base_model, base_model) and Path(adapter.path).exists()


def same_model(a: str, b: str) -> bool:
    """A folder on disk, however it is spelled, or the same hub id."""
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _auth(settings: Settings | None) -> dict[str, str]:
    """The model server's bearer token (FLYWHEEL_LLM_API_KEY), as the generation clients send it."""
    token = (settings or get_settings()).llm_token
    return {"Authorization": f"Bearer {token}"} if token else {}


def load_adapter(name: str, path: str, url: str, backend: str, settings: Settings | None = None) -> None:
    """Make the server at `url` able to answer with `name` (does not make it live). An adapter
    our server holds already, from the same files, is not loaded again (vLLM, which cannot tell,
    reloads it in place), nor when its files are gone: a rollback to the adapter a promotion
    replaced needs none (they may have been cleaned up since). Rolling back further loads from
    files: older versions were let go of. Files written again under the same name (version
    numbers start again after a database reset) are loaded again."""
    base = url.rstrip("/")
    headers = _auth(settings)
    try:
        if backend == "local":
            held = (_held_by_local_server(url, settings) or {}).get(name)
            if held and held["path"] == path and adapter_files_stamp(path) in (None, held.get("files")):
                return
            r = httpx.post(f"{base}/adapters", json={"adapter_id": name, "path": path}, headers=headers, timeout=120)
        elif backend == "openai":  # vLLM's --api-key guards /v1/* too
            # vLLM cannot tell files written again under the same name from those it holds, so,
            # while they are there, they are loaded in place (vLLM >= 0.10; older ones ignore it).
            body = {"lora_name": name, "lora_path": path, **({"load_inplace": True} if adapter_files_stamp(path) else {})}
            r = httpx.post(f"{base}/v1/load_lora_adapter", json=body, headers=headers, timeout=120)
            if r.status_code == 400 and "already" in r.text.lower():
                return
        else:
            raise ServingError(f"The {backend!r} backend cannot load adapters while serving.")
    except httpx.HTTPError as e:
        raise ServingError(f"Could not reach the model server at {base}: {e}") from e
    if r.status_code >= 400:
        raise ServingError(f"The model server refused adapter {name!r} ({r.status_code}): {r.text[:300]}")


def ready_to_answer_with(given: str, settings: Settings | None = None) -> str:
    """Make the model server hold the adapter `given` (its name, or `3`/`v3`) so that it answers
    with it before it goes live, as `flywheel eval answers --adapter` needs; returns its name.
    A registered adapter is loaded on our server or vLLM (TGI holds only what it was launched
    with); a name the registry lacks is fine when the server holds it (started with
    `--adapter NAME=PATH`). Raises ServingError, or PromotionRefused for an unfinished adapter or
    one trained on another model, saying why it cannot answer with it."""
    settings = settings or get_settings()
    if settings.llm_backend == "extractive":
        raise ServingError(f"No model is configured to run adapter {given!r}: FLYWHEEL_LLM_BACKEND is extractive.")
    url = serving_url(settings)
    with db.connection() as conn:
        found = models.find(conn, given)
        adapter = models.promotable(conn, found.version) if found else None   # finished, not failed
        endpoint = models.endpoint(conn)
    name = adapter.name if adapter else given
    if adapter is not None:
        _refuse_unless_served_model(adapter, settings)
    if settings.llm_backend == "tgi":   # TGI holds what it was launched with, and answers anything else as the base model
        launched = models.adapter_names(endpoint.adapters) if endpoint else []
        if name not in launched:
            raise ServingError(f"The TGI serving now was not launched with {name!r} (it has "
                               f"{', '.join(launched) or 'none'}): TGI loads adapters only at start, so promote it, "
                               "which starts a TGI with it (FLYWHEEL_TGI_LAUNCH_COMMAND).")
    elif adapter is not None:
        load_adapter(adapter.name, adapter.path, url, settings.llm_backend, settings)
    else:   # a name only the server may know: started with --adapter NAME=PATH
        held = held_adapters(url, settings.llm_backend, settings)
        if held is None:
            raise ServingError(f"Could not reach the model server at {url} to ask which adapters it holds.")
        if name not in held:
            raise ServingError(f"There is no adapter {given!r}: `flywheel models ls` lists them"
                               + (f", and the model server holds {', '.join(sorted(held))}." if held else "."))
    return name


def held_adapters(url: str, backend: str, settings: Settings | None = None) -> dict[str, str] | None:
    """The adapters the model server at `url` holds now, with their folders (our server's
    `/adapters`, vLLM's `/v1/models`); None when it cannot tell (TGI, extractive, unreachable)."""
    if backend == "local":
        held = _held_by_local_server(url, settings)
        return None if held is None else {name: entry["path"] for name, entry in held.items()}
    if backend != "openai":
        return None
    try:
        r = httpx.get(f"{url.rstrip('/')}/v1/models", headers=_auth(settings), timeout=5)
        r.raise_for_status()
        return {m["id"]: m.get("root", "") for m in r.json()["data"]}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def _held_by_local_server(url: str, settings: Settings | None) -> dict[str, dict[str, Any]] | None:
    """Our server's `/adapters`: adapter id -> {"path", "files" (the adapter_files_stamp of what
    it loaded)}; None when it cannot tell."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/adapters", headers=_auth(settings), timeout=5)
        r.raise_for_status()
        return {a["adapter_id"]: a for a in r.json()["adapters"]}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def lost_live_adapter(live: models.Adapter | None, url: str, settings: Settings) -> bool:
    """Whether the model server at `url` answers without the live adapter (restarted without
    it): it answers with the base model. False when it holds it or cannot tell."""
    held = held_adapters(url, settings.llm_backend, settings) if live is not None else None
    return held is not None and live is not None and live.name not in held


def first_token_logprobs(url: str, adapter_id: str | None, n: int = 8, settings: Settings | None = None) -> list[float]:
    """Greedy logprobs of the first tokens through TGI's `/generate` (our server speaks it too)."""
    parameters = {"max_new_tokens": n, "details": True, "do_sample": False, "adapter_id": adapter_id}
    try:
        r = httpx.post(f"{url.rstrip('/')}/generate", json={"inputs": SMOKE_PROMPT, "parameters": parameters},
                       headers=_auth(settings), timeout=120)
        r.raise_for_status()
        return [t["logprob"] for t in r.json()["details"]["tokens"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        raise ServingError(f"The smoke request to {url} with adapter {adapter_id!r} failed: "
                           f"{type(e).__name__}: {e}. Nothing was switched.") from e


def answers_with_adapter(url: str, adapter_id: str, settings: Settings | None = None) -> bool:
    """True when the adapter changes the model's output: TGI answers an unknown adapter id with
    the base model and no error, which shows up as identical logprobs."""
    base = first_token_logprobs(url, None, settings=settings)
    adapted = first_token_logprobs(url, adapter_id, settings=settings)
    return not _same(base, adapted)


def _same(a: Sequence[float], b: Sequence[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b))


@contextmanager
def _one_at_a_time() -> Iterator[None]:
    """Promotions and rollbacks take turns, whichever process starts them (dashboard, CLI, the
    worker's auto-promote). Two at once would race for the live slot, and on TGI each would
    start a server of its own. The lock is held on a connection of its own, so a process that
    dies releases it. It is released explicitly too: closing a connection only asks the server
    to end its session, so a promotion started straight after would otherwise find it held."""
    with db.connect(autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%(k)s) AS got", {"k": PROMOTION_LOCK_KEY}).fetchone()
        if not row or not row["got"]:
            raise models.PromotionRefused("Another promotion or rollback is under way; "
                                          "try again once it has finished.")
        try:
            yield
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%(k)s)", {"k": PROMOTION_LOCK_KEY})
            except psycopg.Error:   # the connection broke: its session, and the lock, end with it
                logger.warning("could not release the promotion lock; it goes with its connection")


def promote(version: int, settings: Settings | None = None, *, actor: str,
            despite_gate: bool = False) -> models.Adapter:
    """Load, smoke-check, then switch, audited as `actor` in the switch's transaction. Requests
    in flight finish on the adapter they started with; new requests read the live adapter from
    the registry and use the new one. Refused while another promotion or rollback runs, and for
    an adapter that did not pass its eval gate unless `despite_gate` (`models.GateNotPassed`)."""
    with _one_at_a_time():
        return _promote(version, settings or get_settings(), actor=actor, rolling_back=False,
                        despite_gate=despite_gate)


def gate_failure_now(adapter: models.Adapter, settings: Settings | None = None) -> str | None:
    """Why `adapter` should not go live on its eval gate's word (`models.gate_failure`), judged
    against the adapter that answers now (its files may be gone: the server holds it)."""
    settings = settings or get_settings()
    with db.connection() as conn:
        live = models.live(conn)
    answering = live.name if live is not None and same_model(live.base_model, settings.base_model) else None
    return models.gate_failure(adapter, answering)


def _refuse_unless_served_model(adapter: models.Adapter, settings: Settings) -> None:
    """An adapter only fits the model it was trained on: `PromotionRefused` for another one."""
    if not same_model(adapter.base_model, settings.base_model):
        raise models.PromotionRefused(
            f"{adapter.name} was trained on {adapter.base_model}, but the model server runs {settings.base_model} "
            "(FLYWHEEL_LLM_MODEL), and an adapter only fits the model it was trained on. Retrain on "
            "the served model, or serve the adapter's base model again.")


def _promote(version: int, settings: Settings, *, actor: str, rolling_back: bool,
             despite_gate: bool) -> models.Adapter:
    with db.connection() as conn:
        adapter = models.promotable(conn, version)
    failure = None if despite_gate else gate_failure_now(adapter, settings)
    if failure is not None:
        raise models.GateNotPassed(failure)
    _refuse_unless_served_model(adapter, settings)
    if settings.llm_backend == "tgi":
        try:
            return tgi_controller.promote(adapter, settings, actor=actor, rolling_back=rolling_back)
        except tgi_controller.TGIControllerError as e:
            raise ServingError(str(e)) from e
    if settings.llm_backend == "extractive":
        raise ServingError("The extractive backend serves no model, so no adapter can go live; "
                           "set FLYWHEEL_LLM_BACKEND to local, tgi or openai.")
    url = serving_url(settings)
    load_adapter(adapter.name, adapter.path, url, settings.llm_backend, settings)
    # vLLM refuses unknown adapter names itself; TGI-style servers are checked.
    if settings.llm_backend == "local" and not answers_with_adapter(url, adapter.name, settings):
        raise ServingError(f"The model server answers {adapter.name!r} exactly like the base model: "
                           "the adapter is not really loaded. Nothing was switched.")
    with db.connection() as conn:
        replaced = models.live(conn)
        live = models.mark_live(conn, version, actor=actor, rolling_back=rolling_back)
        unneeded = models.not_needed_by_requests(conn, replaced=replaced)
    logger.info("adapter %s is live", live.name)
    if settings.llm_backend == "local":
        let_go_of(unneeded, url, settings)
    return live


def let_go_of(adapters: set[str], url: str, settings: Settings) -> None:
    """Our model server keeps every adapter it loaded, each taking memory (about 80 MB for an 8B
    model at r=16); after a switch it unloads the registered versions no request needs any more.
    Hand-loaded adapters (`serve-llm --adapter`) stay. A failure here costs memory, not answers:
    it is logged. vLLM bounds its own in an LRU cache, and a TGI is stopped with its adapters."""
    base = url.rstrip("/")
    for name in sorted(adapters & set(held_adapters(url, "local", settings) or {})):
        try:
            r = httpx.delete(f"{base}/adapters/{name}", headers=_auth(settings), timeout=30)
        except httpx.HTTPError as e:
            logger.warning("could not unload adapter %s from %s: %s", name, base, e)
            continue
        if r.status_code >= 400 and r.status_code != 404:   # 404: someone unloaded it already
            logger.warning("the model server kept adapter %s (%d): %s", name, r.status_code, r.text[:200])
        else:
            logger.info("adapter %s unloaded from the model server: no request needs it any more", name)


def rollback(settings: Settings | None = None, *, actor: str, from_version: int | None = None,
             to_base_model: bool = False) -> models.Adapter | None:
    """Promote the adapter that was live before the current one, or, when the base model was (or
    that adapter was trained on another base model), retire the current one (None: the base
    model answers; every server serves it as it is, and a TGI a promotion started that is gone
    is forgotten, so the configured server answers). `to_base_model`: straight to the base model
    (the way back when the earlier adapters' files are gone). With `from_version`, refused unless
    that version is still the live one: a second click, or a page older than someone else's
    switch, must not roll back one step further."""
    settings = settings or get_settings()
    with _one_at_a_time():
        with db.connection() as conn:
            current = models.live(conn)
            if from_version is not None and (current is None or current.version != from_version):
                now = f"{current.name} is live" if current else "the base model answers"
                raise models.PromotionRefused(f"flywheel-v{from_version} is no longer live ({now}), so nothing was "
                                              "rolled back: look at the list again.")
            previous = None if to_base_model else models.previous_live(conn)
            # An adapter trained on another base model (served before) does not fit: the base model answers.
            if previous is not None and same_model(previous.base_model, settings.base_model):
                target = previous
            else:
                target = None
                models.roll_back_to_base_model(conn, actor=actor)
                started = models.endpoint(conn)
                if started is not None and not tgi_controller.answers(started.url):
                    # The TGI a promotion started has gone: the configured server answers with the base model.
                    models.clear_endpoint(conn)
                unneeded = models.not_needed_by_requests(conn, replaced=current)
        if target is not None:
            # It was live before, so someone already chose it (despite its gate, if it failed one).
            return _promote(target.version, settings, actor=actor, rolling_back=True, despite_gate=True)
        if settings.llm_backend == "local":
            let_go_of(unneeded, serving_url(settings), settings)
        return None
