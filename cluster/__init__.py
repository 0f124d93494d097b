"""Runs inside Ray: job entrypoint, tasks and actors that wrap ``ml``."""
