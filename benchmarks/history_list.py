"""Listing saved conversations (the TUI sidebar) with 1,000 files in the history dir.

Run: .venv/bin/python benchmarks/history_list.py [N_FILES] [MESSAGES_PER_FILE]
     (defaults: 1000 files x 40 messages)

Measured side by side in one run, on the same files (medians):
- cold list():   a fresh HistoryStore, every header read (quick line reader, tomllib fallback);
- tomllib list(): the same with every header parsed by tomllib (the quick reader turned off);
- warm list():   a second listing from the same store (only changed files are read again);
- load all:      reading every conversation completely (what listing avoids).
Ratios are printed too; the machine may be shared, so compare ratios rather than times.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app.history as history  # noqa: E402
from app.history import Message, conversation_text, new_conversation  # noqa: E402
from app.history_store import HistoryStore  # noqa: E402


def make_files(folder: Path, n_files: int, n_messages: int) -> None:
    """`n_files` conversations of `n_messages` messages (about 500 bytes each)."""
    for i in range(n_files):
        conv = new_conversation("You are helpful.", f"conversation {i}")
        conv.id = f"{conv.id}-{i:05d}"
        conv.messages = [
            Message("user" if j % 2 == 0 else "assistant", f"message {j} " + "lorem ipsum " * 40,
                    metrics={"ttft_ms": 12.5, "decode_tps": 100.0} if j % 2 else None)
            for j in range(n_messages)
        ]
        (folder / f"{conv.id}.toml").write_text(conversation_text(conv), encoding="utf-8")


def timed(func: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `repeats` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    n_files = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    n_messages = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"writing {n_files} files x {n_messages} messages ...", file=sys.stderr)
        make_files(folder, n_files, n_messages)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        assert len(HistoryStore(folder).list()) == n_files
        cold = tomllib_cold = warm = 0.0
        for _ in range(2):  # interleaved rounds: load from the other engineers hits both alike
            cold = timed(lambda: HistoryStore(folder).list(), 5)
            quick = history._quick_header
            history._quick_header = lambda text: None  # type: ignore[assignment]
            try:
                tomllib_cold = timed(lambda: HistoryStore(folder).list(), 5)
            finally:
                history._quick_header = quick
            store = HistoryStore(folder)
            store.list()
            warm = timed(store.list, 5)
        loader = HistoryStore(folder)
        load_all = timed(lambda: [loader.load(s.path) for s in loader.list()], 1)
    print(f"{n_files} files x {n_messages} messages ({size:.1f} MB)")
    print(f"cold list() (quick headers): {cold * 1000:8.1f} ms")
    print(f"cold list() (tomllib only):  {tomllib_cold * 1000:8.1f} ms  "
          f"({tomllib_cold / cold:.1f}x the quick reader)")
    print(f"warm list() (cached):        {warm * 1000:8.1f} ms  "
          f"({cold / warm:.1f}x faster than cold)")
    print(f"load every file:             {load_all * 1000:8.1f} ms  "
          f"({load_all / cold:.1f}x cold list)")


if __name__ == "__main__":
    main()
