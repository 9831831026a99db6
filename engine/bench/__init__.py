"""Benchmarks in llama-bench's conventions: `lampchat bench`."""
