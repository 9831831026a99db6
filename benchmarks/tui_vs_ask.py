"""Benchmark: decode tokens/s of the default model as the TUI measures it vs `lampchat ask`.

Both run the real `lampchat` command with the same prompt, greedy (temperature 0), the same
threads, context length, system prompt and max tokens, in pairs, one after the other (the
order alternates from pair to pair, so that a slow spell on a shared machine hits both):

- TUI: `lampchat --save-history F ...` in a real terminal (a private tmux server); the prompt
  is typed and sent, F is watched (quietly, see `wait_for_reply_in`) until it holds the reply,
  the reply's metrics line is checked on screen, Ctrl+Q quits, and the TUI's own metrics for
  the reply are read from F (`decode_tps`, as shown under the reply);
- ask: `lampchat ask --json ...`, its `decode_tps`.

Greedy decoding must give both the same text and token count (checked: the two did the same
work). Target (TUI issue): TUI decode tokens/s >= 0.95 x ask's (median of the per-pair ratios).

    .venv/bin/python benchmarks/tui_vs_ask.py                         # 15 pairs, 128 tokens
    .venv/bin/python benchmarks/tui_vs_ask.py --pairs 1 --max-tokens 32   # a quick check

Exit status 0 when the target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.history import load_conversation_file  # noqa: E402
from engine.errors import LampchatError  # noqa: E402
from tests.support.tmux_driver import TmuxTerminal, isolated_env, lampchat_argv  # noqa: E402
from tests.support.tui_screen import FINAL_META, assistant_replies  # noqa: E402

TARGET_RATIO = 0.95
PROMPT = "Write a long story about a lighthouse keeper and her cat."
SYSTEM = "You are a helpful assistant."
QUIET_POLL_S = 0.1


@dataclass
class Run:
    """One reply's figures."""

    decode_tps: float
    tokens: int
    ttft_ms: float
    text: str


def common_flags(args: argparse.Namespace) -> list[str]:
    """The flags both commands get."""
    return ["--temperature", "0", "--seed", "1", "--threads", str(args.threads),
            "--ctx", str(args.ctx), "--max-tokens", str(args.max_tokens), "--system", SYSTEM]


def run_ask(args: argparse.Namespace, home: Path) -> Run:
    """`lampchat ask --json`: its own metrics."""
    done = subprocess.run(
        [*lampchat_argv(), "ask", "--json", *common_flags(args), args.prompt],
        capture_output=True, text=True, timeout=600, env=isolated_env(home), cwd=REPO,
    )
    if done.returncode != 0:
        raise SystemExit(f"lampchat ask failed ({done.returncode}): {done.stderr.strip()}")
    data = json.loads(done.stdout)
    return Run(float(data["decode_tps"]), int(data["completion_tokens"]),
               float(data["ttft_ms"]), str(data["text"]))


def wait_for_reply_in(path: Path, timeout: float) -> None:
    """Wait until the TUI's --save-history file holds the finished reply.

    While the reply decodes, this costs the machine next to nothing: a `stat` every
    `QUIET_POLL_S`, the file read only when it has changed (when the prompt is sent, and when
    the reply is finished; its checkpoints go to a side file). Watching the screen instead
    (`tmux capture-pane`, a process each time) took about 1.8 ms of CPU per look, 10 looks a
    second, from the cores the decode runs on: the figure measured the harness as well.
    """
    deadline = time.monotonic() + timeout
    seen: tuple[int, int] | None = None
    while True:
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        if stat is not None and (stat.st_mtime_ns, stat.st_size) != seen:
            seen = (stat.st_mtime_ns, stat.st_size)
            try:
                messages = load_conversation_file(path).messages
            except LampchatError:
                messages = []
            if len(messages) >= 2 and messages[-1].role == "assistant":
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"the reply never reached {path}")
        time.sleep(QUIET_POLL_S)


def run_tui(args: argparse.Namespace, home: Path, work: Path) -> Run:
    """The real TUI in tmux: send the prompt, wait for the metrics line, quit, read F."""
    saved = work / "tui-chat.toml"
    saved.unlink(missing_ok=True)
    terminal = TmuxTerminal(work, width=160, height=50)
    try:
        terminal.start([*lampchat_argv(), "--save-history", str(saved), *common_flags(args)],
                       isolated_env(home))
        terminal.wait_for(re.compile(r"· llama\.cpp · "), 180, "the model to load")
        terminal.type_text(args.prompt)
        terminal.send_keys("Enter")
        wait_for_reply_in(saved, 900)  # quietly: the screen is read once the reply is done
        terminal.wait_for(lambda s: len(assistant_replies(s)) == 1
                          and FINAL_META.search(assistant_replies(s)[0].meta),
                          60, "the reply's metrics line")
        terminal.send_keys("C-q")
        status, _state = terminal.wait_exit(120)
        if status != 0:
            raise SystemExit(f"the TUI exited with status {status}:\n{terminal.last_screen}")
    finally:
        terminal.close()
    reply = load_conversation_file(saved).messages[-1]
    metrics = reply.metrics or {}
    return Run(float(metrics["decode_tps"]), int(metrics["completion_tokens"]),
               float(metrics["ttft_ms"]), reply.content)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=15, help="TUI/ask pairs")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--prompt", default=PROMPT)
    args = parser.parse_args(argv)

    ratios: list[float] = []
    same_work = True
    with tempfile.TemporaryDirectory(prefix="lampchat-tui-vs-ask-") as tmp:
        work = Path(tmp)
        home = work / "home"
        print(f"default model, greedy, {args.threads} threads, ctx {args.ctx}, "
              f"{args.max_tokens} max tokens, {args.pairs} pairs (order alternates)")
        print(f"{'pair':>4}  {'TUI tok/s':>10}  {'ask tok/s':>10}  {'ratio':>6}  "
              f"{'TUI tokens':>10}  {'ask tokens':>10}  {'TUI TTFT':>9}  {'ask TTFT':>9}")
        for pair in range(args.pairs):
            if pair % 2 == 0:
                tui = run_tui(args, home, work)
                ask = run_ask(args, home)
            else:
                ask = run_ask(args, home)
                tui = run_tui(args, home, work)
            ratio = tui.decode_tps / ask.decode_tps
            ratios.append(ratio)
            same = tui.tokens == ask.tokens and tui.text.strip() == ask.text.strip()
            same_work = same_work and same
            note = "" if same else "  (texts differ)"
            print(f"{pair + 1:>4}  {tui.decode_tps:>10.1f}  {ask.decode_tps:>10.1f}  "
                  f"{ratio:>6.3f}  {tui.tokens:>10}  {ask.tokens:>10}  "
                  f"{tui.ttft_ms:>7.0f}ms  {ask.ttft_ms:>7.0f}ms{note}")
    median = statistics.median(ratios)
    ok = median >= TARGET_RATIO and same_work
    verdict = "PASS" if median >= TARGET_RATIO else "FAIL"
    print(f"median TUI/ask decode ratio {median:.3f} (min {min(ratios):.3f}, max "
          f"{max(ratios):.3f}); target >= {TARGET_RATIO}  [{verdict}]")
    print(f"same greedy text and token count in every pair: {same_work}  "
          f"[{'PASS' if same_work else 'FAIL'}]")
    print(f"RESULT: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
