"""`flywheel serve-llm`: the local generation server (TGI's HTTP API), the `llm` Procfile line."""
from __future__ import annotations

import logging

import typer

from core.config import get_settings

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("serve-llm")
    def serve_llm(model: str = typer.Option(None, "--model", help="Local folder or hub id; default SmolLM2-135M-Instruct."),
                  adapter: list[str] = typer.Option([], "--adapter", help="NAME=PATH, repeatable."),
                  host: str = typer.Option(None, "--host"), port: int = typer.Option(None, "--port")) -> None:
        """Serve the base model and its LoRA adapters over TGI's HTTP API (with a database, the
        live adapter too)."""
        import uvicorn

        from core import serving
        from core.llm.local_model import LocalModel, ensure_default_model
        from core.llm.server import create_app

        settings = get_settings()
        source = model or settings.llm_model or str(ensure_default_model(settings.data_dir))
        local = LocalModel(source)
        for spec in adapter:
            name, sep, path = spec.partition("=")
            if not sep:
                raise typer.BadParameter(f"--adapter expects NAME=PATH, got {spec!r}")
            local.load_adapter(name, path)
        live = serving.live_adapter_for(source, settings)
        if live is not None and live.name not in local.adapters:  # a restart keeps answering with it
            local.load_adapter(live.name, live.path)
            logger.info("loaded the live adapter %s from %s", live.name, live.path)
        uvicorn.run(create_app(local, default_max_new_tokens=settings.llm_max_new_tokens),
                    host=host or settings.llm_host, port=port or settings.llm_port, log_level="info")
