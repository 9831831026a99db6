"""Lampchat's application layer: the Textual app, its screens, the CLI, config and history."""
