"""Events API listeners: questions by @mention and by direct message."""
from __future__ import annotations

from slack_bolt import App

from bot.listeners.events import direct_message, mention, retries


def register(app: App) -> None:
    app.event("app_mention", middleware=[retries.drop_retries])(mention.handle_app_mention)
    # Every message.im event must be acknowledged (an unhandled one is a 404, which Slack
    # retries), so one listener takes them all and answers only people's new messages.
    app.event("message", middleware=[retries.drop_retries])(direct_message.handle_direct_message)
