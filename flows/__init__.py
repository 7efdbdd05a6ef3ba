"""Prefect flows: thin wrappers that run pitstop's engine with Prefect's orchestration."""
