"""Backends: one per file, all implementing `engine.backends.base.Backend`."""
