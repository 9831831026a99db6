"""Tests: the benchmark tools themselves."""
