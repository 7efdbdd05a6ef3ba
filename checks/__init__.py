"""Preflight and post-verification checks. Each module registers its checks on import."""
