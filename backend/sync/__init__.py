"""Sync runs: the staged pipeline and its GitHub stages."""
