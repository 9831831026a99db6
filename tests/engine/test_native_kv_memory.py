"""The native KV cache's memory grows with the positions used, in small pages: no 2 MB huge
page is faulted in (and zeroed) per (layer, head) row on the first reply."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from engine.native.kv_cache import KVCache

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/smaps")


def _mapping_kb(array: np.ndarray) -> dict[str, int]:
    """The smaps counters (kB) summed over the mappings that hold `array` (an madvise can
    split one allocation into several)."""
    low = array.__array_interface__["data"][0]
    high = low + array.nbytes
    counters: dict[str, int] = {}
    inside = False
    with open("/proc/self/smaps", encoding="ascii") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start < high and low < end
            elif inside and line.split()[-1] == "kB":
                key = head.rstrip(":")
                counters[key] = counters.get(key, 0) + int(line.split()[1])
    return counters


def test_writing_the_first_positions_touches_only_their_pages() -> None:
    layers, heads, ctx, hd = 30, 3, 4096, 64  # SmolLM2's cache: 94 MB per array
    cache = KVCache(layers, heads, ctx, hd)
    rows = np.ones((16, heads, hd), np.float32)
    for layer in range(layers):
        cache.write(layer, 0, rows, rows)
    keys = _mapping_kb(cache.keys)
    assert keys.get("AnonHugePages", 0) == 0
    # 16 positions x 64 floats = one 4 kB page per (layer, head) row: 90 pages, 360 kB
    assert keys["Rss"] <= 2 * 360, keys
    assert cache.keys[29, 2, 15, 63] == 1.0 and cache.keys[29, 2, 16, 0] == 0.0
