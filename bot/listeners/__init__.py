"""Every Bolt listener, registered by kind."""
from __future__ import annotations

from slack_bolt import App

from bot.listeners import actions, events, views


def register(app: App) -> None:
    events.register(app)
    actions.register(app)
    views.register(app)
