"""Reusable Textual widgets of Lampchat (they never import `app`)."""
