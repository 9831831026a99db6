"""A deterministic scripted backend for UI tests, snapshots and benchmarks (never shipped).

`ScriptedBackend` streams a fixed Markdown reply at a fixed rate. Its options come from the
model "path", written like a URL so that the picker, the hotkeys and `--model` can name it:

    scripted://fast?rate=2000&tokens=4000&fail_after=10

- `rate`: tokens per second (0: as fast as possible; default 400);
- `tokens`: make the reply exactly this many tokens long (default: `REPLY` as it is);
- `fail_after`: raise a BackendError after this many tokens (a backend failing mid-stream);
- `fail_load=1`: loading fails with a ModelLoadError;
- `echo=1`: the reply starts with "You said: <last user message>";
- `numbered=1`: the reply starts with "Reply N." (N counts this model's replies), so that a
  regenerated reply differs from the one before.

`LoadSettings.options` may hold the same keys. Register it for a test with `install(monkeypatch)`;
`FixedClock` replaces the engine's reply clock so that metrics are the same on every run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from engine.backends.base import Backend, ProgressCallback
from engine.errors import BackendError, ModelLoadError
from engine.metrics import ReplyClock
from engine.types import ChatMessage, LoadSettings, ModelInfo, Piece, SamplingParams, StreamStats

SCHEME = "scripted://"

REPLY = """\
## Brewing tea

Here is a **short** guide, with a list, a table and some code:

1. Boil fresh water.
2. Warm the pot, then add *one spoon* per cup.
3. Steep for three to five minutes.

| Tea   | Water | Minutes |
|-------|-------|---------|
| Green | 80 °C | 2-3     |
| Black | 95 °C | 3-5     |

```python
def steep(minutes: int) -> str:
    return f"steeped for {minutes} min"
```

Enjoy your cup!"""
"""The reply streamed by default (about 110 tokens)."""

_TOKEN = re.compile(r"\s*\S{1,4}|\s+")


def tokenize(text: str) -> list[str]:
    """Split `text` into token-like pieces (whitespace kept) that join back to `text`."""
    return _TOKEN.findall(text)


def long_reply(n_tokens: int) -> str:
    """A Markdown reply of exactly `n_tokens` tokens (as `tokenize` counts them)."""
    tokens: list[str] = []
    section = 0
    while len(tokens) < n_tokens:
        section += 1
        tokens.extend(tokenize(f"\n\n### Part {section}\n\n" + REPLY.split("\n", 2)[2]))
    text = "".join(tokens[:n_tokens])
    return text


def parse_spec(model: str) -> tuple[str, dict[str, str]]:
    """('name', {option: value}) from 'scripted://name?key=value&...'."""
    if not model.startswith(SCHEME):
        raise ModelLoadError(f"not a scripted model: {model}")
    parts = urlsplit(model)
    return parts.netloc or "scripted", dict(parse_qsl(parts.query))


class ScriptedBackend(Backend):
    """Streams a fixed Markdown reply at a fixed rate; honours cancel within one token."""

    name = "scripted"
    local = False  # its decode sleeps: it takes none of this machine's CPU

    def __init__(self) -> None:
        super().__init__()
        self.options: dict[str, Any] = {}
        self.replies = 0

    def load(
        self, model: str, settings: LoadSettings, progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """'Load' the scripted model named by `model`."""
        name, options = parse_spec(model)
        self.options = {**options, **settings.options}
        for step in range(1, 5):
            if progress:
                progress(step / 4, "loading scripted weights")
            time.sleep(float(self.options.get("load_s", 0.0)) / 4)
        if str(self.options.get("fail_load", "0")) == "1":
            raise ModelLoadError(f"scripted model {name!r} refuses to load")
        self.settings = settings
        self.info = ModelInfo(
            name=name,
            path=model,
            backend=self.name,
            device="cpu",
            format="scripted",
            quantization="none",
            n_params=1_000_000,
            context_length=settings.n_ctx or 4096,
            file_size=1024,
            chat_template_source="none",
        )
        return self.info

    def unload(self) -> None:
        """Forget the model."""
        self.info = None

    def reply_for(self, messages: Sequence[ChatMessage]) -> str:
        """The text this model replies to `messages`."""
        n_tokens = int(self.options.get("tokens", 0))
        text = long_reply(n_tokens) if n_tokens else str(self.options.get("reply", REPLY))
        if str(self.options.get("echo", "0")) == "1":
            last = next((m.content for m in reversed(messages) if m.role == "user"), "")
            text = f"You said: {last}\n\n{text}"
        if str(self.options.get("numbered", "0")) == "1":
            self.replies += 1
            text = f"Reply {self.replies}.\n\n{text}"
        return text

    def stream(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams, stats: StreamStats
    ) -> Iterator[Piece]:
        """Yield the reply one token at a time, paced to `rate` tokens/s."""
        tokens = tokenize(self.reply_for(messages))
        stats.prompt_tokens = sum(len(tokenize(m.content)) + 4 for m in messages)
        rate = float(self.options.get("rate", 400))
        fail_after = int(self.options.get("fail_after", -1))
        start = time.perf_counter()
        stats.finish_reason = "stop"
        for i, token in enumerate(tokens):
            if self.cancelled:
                stats.finish_reason = "cancelled"
                return
            if i == fail_after:
                raise BackendError("scripted backend failure mid-stream")
            if i >= sampling.max_tokens:
                stats.finish_reason = "length"
                return
            if rate > 0:
                delay = start + (i + 1) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            yield Piece(token, 1)


class FixedClock(ReplyClock):
    """A reply clock with made-up, constant timings: TTFT 120 ms, 50 tokens/s, 180 MB RSS."""

    def __init__(self) -> None:
        super().__init__()
        self.peak_rss = 180 * 2**20
        self.t_start = 0.0

    def token(self, n_tokens: int) -> None:
        if n_tokens <= 0:
            return
        if self.t_first is None:
            self.t_first = 0.120
            self.t_last = 0.120
        else:
            self.t_last = (self.t_last or 0.120) + n_tokens / 50
        self.completion_tokens += n_tokens

    def finish(self) -> None:
        self.t_end = (self.t_last or 0.120) + 0.005


def install(monkeypatch: Any, fixed_clock: bool = False) -> None:
    """Make the 'scripted' backend loadable (and, optionally, its metrics constant)."""
    from engine import registry

    monkeypatch.setitem(registry.BACKENDS, "scripted", f"{__name__}:ScriptedBackend")
    if fixed_clock:
        import engine.worker

        monkeypatch.setattr(engine.worker, "ReplyClock", FixedClock)
