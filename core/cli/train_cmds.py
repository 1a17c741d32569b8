"""`flywheel train`, `flywheel worker`, `flywheel models ...`: retrain, run the queue, promote."""
from __future__ import annotations

from collections.abc import Callable

import typer

from core import curation, db, hyperparams, metrics, models, queue, retrain, serving, training
from core.config import get_settings

WAIT_TIMEOUT_S = 24 * 3600


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Retrain the LoRA adapter on curated answers (the worker runs it).")
    models_app = typer.Typer(no_args_is_help=True, help="Adapter versions: list, promote, roll back.")
    app.add_typer(train_app, name="train")
    app.add_typer(models_app, name="models")

    @train_app.callback(invoke_without_command=True)
    def train(ctx: typer.Context,
              dataset: int = typer.Option(None, "--dataset", help="Dataset version; default: the latest."),
              epochs: int = typer.Option(None, "--epochs", min=1),
              rank: int = typer.Option(None, "--rank", min=1),
              base_model: str = typer.Option(None, "--base-model", help="Default: the configured base model."),
              param: list[str] = typer.Option([], "--param", help="KEY=VALUE (JSON value), e.g. lr=1e-4; repeatable."),
              wait: bool = typer.Option(False, "--wait", help="Follow the run until it ends (a worker must be running)."),
              by: str = typer.Option("cli", "--as", help="Who asks (recorded).")) -> None:
        """Queue a retrain on a dataset version."""
        if ctx.invoked_subcommand is not None:
            return
        try:
            params = hyperparams.from_pairs(param)
            params.update({k: v for k, v in (("epochs", epochs), ("rank", rank)) if v is not None})
            run = retrain.request_retrain(requested_by=by, dataset_version=dataset, base_model=base_model,
                                          params=params)
        except (hyperparams.InvalidParams, retrain.NotAModel, curation.CurationError, training.RunAlreadyActive) as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from e
        typer.echo(f"retrain run {run.id} queued on dataset v{run.dataset_version} (job {run.job_id})")
        if wait:
            _follow(run.id)

    @train_app.command("resume")
    def resume(run_id: int, wait: bool = typer.Option(False, "--wait"), by: str = typer.Option("cli", "--as")) -> None:
        """Queue a failed run again; it continues from its last checkpoint (or starts over if it left none)."""
        try:
            run = retrain.resume_retrain(run_id, requested_by=by)
        except (training.CannotResume, training.RunAlreadyActive) as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from e
        typer.echo(f"retrain run {run.id} queued again (job {run.job_id})")
        if wait:
            _follow(run.id)

    @train_app.command("cancel")
    def cancel(run_id: int, by: str = typer.Option("cli", "--as")) -> None:
        """Stop a queued or running retrain (a running one stops at its next step)."""
        try:
            run = retrain.cancel_retrain(run_id, requested_by=by)
        except LookupError as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(1) from e
        if run is None:
            typer.echo(f"Run {run_id} is not queued or running.", err=True)
            raise typer.Exit(1)
        typer.echo(f"run {run_id}: " + ("cancelled" if run.status == "cancelled" else "cancellation requested"))

    @train_app.command("ls")
    def runs(limit: int = typer.Option(20, "--limit", min=1)) -> None:
        """Recent retrain runs."""
        with db.connection() as conn:
            found = training.list_runs(conn, limit)
        if not found:
            typer.echo("No retrains yet.")
        for r in found:
            adapter = f"v{r.adapter_version}" if r.adapter_version else "-"
            typer.echo(f"{r.id}\t{r.status}\t{r.progress:.0%}\tdataset v{r.dataset_version}\tadapter {adapter}\t"
                       f"{r.created_at:%Y-%m-%d %H:%M}\t{(r.error or '').splitlines()[0] if r.error else ''}")

    @app.command()
    def worker() -> None:
        """Run the job worker: retrains one at a time, and the periodic schedule (Procfile `worker`)."""
        queue.ensure_schema()
        for run_id in retrain.recover_orphaned_runs():
            with db.connection() as conn:
                run = training.get_run(conn, run_id)
            typer.echo(f"run {run_id}, left by a worker that stopped: {run.status}. {run.error}")  # type: ignore[union-attr]
        settings = get_settings()
        if settings.worker_metrics_port:
            metrics.start_exporter(settings.worker_metrics_port, db.database_url())
        typer.echo("worker: waiting for retrain jobs on the 'training' queue (Ctrl-C to stop)")
        queue.run_worker()

    @models_app.command("ls")
    def models_ls() -> None:
        """Adapter versions, newest first, with their gate figures."""
        with db.connection() as conn:
            adapters = models.list_adapters(conn)
        if not adapters:
            typer.echo("No adapters yet: run `flywheel train`.")
        for a in adapters:
            gate = a.metrics.get("gate", {})
            new = gate.get("candidate") or {}
            figures = (f"gate {'passed' if gate.get('passed') else 'failed'} vs {gate.get('baseline_name')}: "
                       f"F1 {new.get('token_f1')}, ROUGE-L {new.get('rouge_l')}" if "candidate" in gate else "")
            typer.echo(f"v{a.version}\t{a.name}\t{a.status}\tdataset v{a.dataset_version}\t"
                       f"{a.created_at:%Y-%m-%d %H:%M}\t{figures or a.error or ''}")

    @models_app.command("promote")
    def promote(version: str = typer.Argument(..., help="3, v3 or flywheel-v3 (`flywheel models ls`)."),
                by: str = typer.Option("cli", "--as", help="Who promotes (recorded)."),
                despite_gate: bool = typer.Option(False, "--despite-gate",
                                                  help="Promote an adapter that did not pass its eval gate.")) -> None:
        """Load adapter VERSION into the serving model, check it, and make it live."""
        number = models.version_number(version)
        if number is None:
            typer.echo(f"{version!r} is not an adapter version: give 3, v3 or flywheel-v3 (`flywheel models ls` "
                       "lists them).", err=True)
            raise typer.Exit(2)
        _switch(lambda: serving.promote(number, actor=by, despite_gate=despite_gate))

    @models_app.command("rollback")
    def rollback(by: str = typer.Option("cli", "--as", help="Who rolls back (recorded)."),
                 to_base: bool = typer.Option(False, "--to-base", help="Straight to the base model, no adapter.")) -> None:
        """Make the previously live adapter live again (the base model, before the first)."""
        _switch(lambda: serving.rollback(actor=by, to_base_model=to_base))


def _switch(action: Callable[[], models.Adapter | None]) -> None:
    try:
        live = action()
    except models.GateNotPassed as e:
        typer.echo(f"{e} Nothing was switched; add --despite-gate to promote it all the same.", err=True)
        raise typer.Exit(2) from e
    except (models.PromotionRefused, serving.ServingError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from e
    typer.echo(f"{live.name} (v{live.version}) is live" if live else "no adapter is live: the base model answers")


def _follow(run_id: int) -> None:
    printed = 0

    def show(run: training.TrainingRun) -> None:
        nonlocal printed
        lines = run.log.splitlines()
        for line in lines[printed:]:
            typer.echo(f"  {line}")
        printed = len(lines)

    run = retrain.wait_for_run(run_id, timeout_s=WAIT_TIMEOUT_S, on_update=show)
    typer.echo(f"run {run.id}: {run.status}" + (f" ({run.error.splitlines()[0]})" if run.error else ""))
    if run.status != "succeeded":
        raise typer.Exit(1)
