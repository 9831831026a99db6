"""Developer tools (not tests): screenshots for README."""
