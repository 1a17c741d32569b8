"""`python -m core.cli` runs the `flywheel` command."""
from core.cli import run

run()
