"""Flywheel's domain: knowledge, generation, the agent and the records the loop feeds on."""
