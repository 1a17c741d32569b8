"""`flywheel ask` and `flywheel reviews ...`: the agent from the terminal."""
from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import typer

from core import db, evaluation, feedback, models, serving
from core.agent import run


def _print_outcome(outcome: run.Outcome) -> None:
    typer.echo(outcome.text)
    if outcome.sources:
        typer.echo("\nSources:")
        for s in outcome.sources:
            where = f"{s['title']} > {s['heading']}" if s.get("heading") else s["title"]
            link = f"  <{s['url']}>" if s.get("url") else ""
            typer.echo(f"  [{s['n']}] {where}{link}")
    route = {"answered": "answered", "review": "sent to review", "declined": "declined"}[outcome.route]
    extra = f", review {outcome.review_id}" if outcome.review_id else ""
    conf = f", confidence {outcome.confidence:.2f}" if outcome.confidence is not None else ""
    typer.echo(f"\nRoute: {route} ({outcome.reason}{conf}{extra}); answer {outcome.answer_id}")
    steps = [s for s in ("guard", "retrieve", "draft", "assess", "total") if s in outcome.timings]
    if steps:
        typer.echo("Timings: " + ", ".join(f"{s} {outcome.timings[s] * 1000:.0f} ms" for s in steps))


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    reviews_app = typer.Typer(no_args_is_help=True, help="Drafts waiting for a human.")
    app.add_typer(reviews_app, name="reviews")

    @app.command()
    def ask(question: str, user: str = typer.Option(None, "--user", help="Ask as this Slack user id."),
            channel: str = typer.Option(None, "--channel", help="Ask from this Slack channel id.")) -> None:
        """Ask the agent a question and print the answer, sources, route and timings."""
        outcome = run.ask(question, run.Asker(surface="cli", user_id=user, channel_id=channel))
        _print_outcome(outcome)

    @reviews_app.command("ls")
    def reviews_ls() -> None:
        """List drafts waiting for a reviewer: the question, the draft and its sources."""
        with db.connection() as conn:
            pending = feedback.pending_reviews(conn)
        if not pending:
            typer.echo("No drafts are waiting for review.")
        for review, answer in pending:
            conf = f", confidence {answer.confidence:.2f}" if answer.confidence is not None else ""
            typer.echo(f"Review {review.id} ({review.created_at:%Y-%m-%d %H:%M}): {review.reason}{conf}")
            typer.echo(textwrap.indent(f"Question: {answer.question}\nDraft: {answer.draft or '(none)'}", "  "))
            for s in answer.sources:
                typer.echo(f"  [{s['n']}] {s['title']}" + (f" > {s['heading']}" if s.get("heading") else ""))
            typer.echo("")

    def _decide(review_id: int, decision: dict) -> None:
        try:
            outcome = run.decide(review_id, decision)  # type: ignore[arg-type]
        except (ValueError, run.ReviewNotFound) as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from e
        if outcome is None:
            typer.echo(f"Review {review_id} was already decided; nothing changed.", err=True)
            raise typer.Exit(1)
        typer.echo(f"Delivered to the asker's thread:\n{outcome.text}")

    @reviews_app.command("approve")
    def approve(review_id: int, edit: str = typer.Option(None, "--edit", help="Deliver this text instead."),
                reviewer: str = typer.Option("cli", "--as", help="Who decides (recorded).")) -> None:
        """Approve a draft as it is, or with --edit TEXT."""
        if edit is not None:
            _decide(review_id, {"action": "edit", "reviewer": reviewer, "text": edit})
        else:
            _decide(review_id, {"action": "approve", "reviewer": reviewer})

    @reviews_app.command("reject")
    def reject(review_id: int, reason: str = typer.Option(..., "--reason"),
               reviewer: str = typer.Option("cli", "--as")) -> None:
        """Reject a draft: the asker gets a polite note that a person will follow up."""
        _decide(review_id, {"action": "reject", "reviewer": reviewer, "reason": reason})

    @eval_app.command("answers")
    def eval_answers(questions: Path = typer.Option(..., "--questions", exists=True, dir_okay=False),
                     adapter: str = typer.Option(None, "--adapter", help=(
                         "flywheel-v3, v3, or a name the model server was started with; a ready adapter is "
                         "loaded first. Default: the base model.")),
                     limit: int = typer.Option(0, "--limit", min=0, help="Only the first N questions (0: all).")) -> None:
        """Answer each question through the agent and score against the reference answers.
        Prints one JSON object on its last line."""
        try:
            pairs = evaluation.read_questions(questions)
        except ValueError as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from e
        pairs = pairs[:limit] if limit else pairs
        context = dataclasses.replace(run.default_context(), reviews=False)
        if adapter is not None:
            try:   # a ready adapter is loaded first: is it worth promoting?
                adapter = serving.ready_to_answer_with(adapter)
            except (serving.ServingError, models.PromotionRefused) as e:
                typer.echo(f"Stopped, nothing asked: {e}", err=True)
                raise typer.Exit(1) from e
        context = dataclasses.replace(context, adapter_id=adapter)
        predictions, declined = [], []
        for pair in pairs:
            outcome = run.ask(pair.question, run.Asker(surface="eval"), context=context)
            wrong = evaluation.not_the_model_asked(outcome.model, outcome.adapter_id, asked_adapter=adapter,
                                                   model_configured=context.generator is not None)
            if wrong is not None:
                typer.echo(f"Stopped, nothing scored: answer {outcome.answer_id} {wrong}.", err=True)
                raise typer.Exit(1)
            predictions.append(outcome.text)
            declined.append(outcome.route == "declined")
        summary = evaluation.summarise(predictions, [p.answer for p in pairs], declined)
        typer.echo(json.dumps({"adapter": adapter, **summary}))
