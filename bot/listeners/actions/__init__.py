"""Button clicks: 👍/👎 on answers; Approve / Edit & approve / Reject on review cards."""
from __future__ import annotations

from slack_bolt import App

from bot import blocks, review_view
from bot.listeners.actions import rating, review


def register(app: App) -> None:
    app.action(blocks.RATE_UP)(rating.handle_rate_up)
    app.action(blocks.RATE_DOWN)(rating.handle_rate_down)
    app.action(review_view.APPROVE)(review.handle_approve)
    app.action(review_view.EDIT)(review.handle_edit)
    app.action(review_view.REJECT)(review.handle_reject)
