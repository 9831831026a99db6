"""Tests: code quality (layering, cycles, lint)."""
