"""`python -m bot`: run the Slack bot (Socket Mode, or HTTP events), or say how to configure it."""
from __future__ import annotations

import sys

from bot.app import main
from core.config import SettingsInvalid

try:
    sys.exit(main(sys.argv[1:]))
except SettingsInvalid as e:
    sys.exit(f"bot: {e}")
