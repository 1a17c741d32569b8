"""Modal submissions: what was wrong with an answer; a reviewer's edit or reason to reject."""
from __future__ import annotations

from slack_bolt import App

from bot import blocks, review_view
from bot.listeners.views import rating, review


def register(app: App) -> None:
    app.view(blocks.FEEDBACK_MODAL)(rating.handle_feedback_submission)
    app.view(review_view.EDIT_MODAL)(review.handle_edit_submission)
    app.view(review_view.REJECT_MODAL)(review.handle_reject_submission)
