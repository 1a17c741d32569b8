"""The Slack adapter: Slack events in, the agent runs, Block Kit out; reviews and 👍/👎 back in."""
