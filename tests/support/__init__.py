"""Test helpers shared across areas (importable as `support.*`)."""
