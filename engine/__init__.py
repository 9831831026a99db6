"""Lampchat's headless core: backends, model formats, sampling, metrics and the async worker."""
