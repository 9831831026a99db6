"""Listing 1,000 saved conversations: HistoryStore.list() (headers only) vs loading every file.

Run: .venv/bin/python benchmarks/history_list.py [N_FILES] [MESSAGES_PER_FILE]
Prints both timings side by side (one run, same files) and their ratio.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.history import HistoryStore, Message, conversation_text, new_conversation  # noqa: E402


def make_files(folder: Path, n_files: int, n_messages: int) -> None:
    for i in range(n_files):
        conv = new_conversation("You are helpful.", f"conversation {i}")
        conv.id = f"{conv.id}-{i:05d}"
        conv.messages = [
            Message("user" if j % 2 == 0 else "assistant", f"message {j} " + "lorem ipsum " * 40,
                    metrics={"ttft_ms": 12.5, "decode_tps": 100.0} if j % 2 else None)
            for j in range(n_messages)
        ]
        (folder / f"{conv.id}.toml").write_text(conversation_text(conv), encoding="utf-8")


def timed(func, repeats: int = 5) -> float:  # type: ignore[no-untyped-def]
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
        make_files(folder, n_files, n_messages)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        store = HistoryStore(folder)
        assert len(store.list()) == n_files
        t_list = timed(store.list)
        t_load = timed(lambda: [store.load(s.path) for s in store.list()], repeats=1)
    print(f"{n_files} files x {n_messages} messages ({size:.1f} MB)")
    print(f"list() headers only: {t_list * 1000:8.1f} ms (median of 5)")
    print(f"load() every file:   {t_load * 1000:8.1f} ms")
    print(f"ratio load/list:     {t_load / t_list:8.1f}x")


if __name__ == "__main__":
    main()
