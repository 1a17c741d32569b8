"""`flywheel serve-llm`: the local generation server (TGI's HTTP API), the `llm` Procfile line."""
from __future__ import annotations

import logging
import threading

import typer

from core.config import get_settings, is_loopback

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("serve-llm")
    def serve_llm(model: str = typer.Option(None, "--model", help="Local folder or hub id; default SmolLM2-135M-Instruct."),
                  adapter: list[str] = typer.Option([], "--adapter", help="NAME=PATH, repeatable."),
                  host: str = typer.Option(None, "--host"), port: int = typer.Option(None, "--port"),
                  idle_unless_local: bool = typer.Option(
                      False, "--idle-unless-local",
                      help="With another FLYWHEEL_LLM_BACKEND, stay up doing nothing (the Procfile's llm line).")) -> None:
        """Serve the base model and its LoRA adapters over TGI's HTTP API (with a database, the
        live adapter too)."""
        import uvicorn

        from core import retrain, serving
        from core.llm.local_model import LocalModel
        from core.llm.server import create_app

        settings = get_settings()
        if idle_unless_local and settings.llm_backend != "local":
            typer.echo(f"FLYWHEEL_LLM_BACKEND is {settings.llm_backend}: no local model server is needed here.")
            threading.Event().wait()   # stay up: under honcho, a process that exits stops all the others
        address = host or settings.llm_host
        if not is_loopback(address) and not settings.llm_token:
            raise typer.BadParameter(
                f"refusing to serve on {address} without FLYWHEEL_LLM_API_KEY: anyone who can reach the server "
                "could load, replace or unload the adapters every answer uses. Set FLYWHEEL_LLM_API_KEY (and the "
                "same on every Flywheel process), or listen on 127.0.0.1.")
        adapters = [spec.partition("=") for spec in adapter]
        for spec, (name, sep, path) in zip(adapter, adapters):
            if not (name and sep and path):
                raise typer.BadParameter(f"--adapter expects NAME=PATH, got {spec!r}")
        try:
            source = retrain.model_source(model or retrain.default_base_model(settings))
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        try:
            local = LocalModel(source)
        except (OSError, ValueError) as e:  # not a model folder, a hub id out of reach
            raise typer.BadParameter(f"cannot load the model {source!r}: {str(e).strip().splitlines()[0]}") from None
        for name, _, path in adapters:
            try:
                local.load_adapter(name, path)
            except (OSError, ValueError) as e:
                raise typer.BadParameter(f"cannot load the adapter {name!r}: {e}") from None
        live = serving.live_adapter_for(source, settings)
        if live is not None and live.name not in local.adapters:  # a restart keeps answering with it
            try:
                local.load_adapter(live.name, live.path)
                logger.info("loaded the live adapter %s from %s", live.name, live.path)
            except (OSError, ValueError) as e:   # its files damaged or half gone: serve, with the base model
                logger.error("cannot load the live adapter %s (%s): serving the base model until a promotion "
                             "loads one", live.name, e)
        uvicorn.run(create_app(local, default_max_new_tokens=settings.llm_max_new_tokens),
                    host=address, port=port or settings.llm_port, log_level="info")
