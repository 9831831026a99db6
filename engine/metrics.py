"""Per-reply measurements taken by the engine: timestamps, token counts, peak RSS."""

from __future__ import annotations

import time

import psutil

from engine.types import FinishReason, ModelInfo, ReplyMetrics

_PROCESS = psutil.Process()
_RSS_EVERY_S = 0.05


def rss_bytes() -> int:
    """Resident set size of this process, in bytes."""
    return int(_PROCESS.memory_info().rss)


class ReplyClock:
    """Records one reply's timeline from the engine thread, then derives its metrics.

    TTFT runs from the request to the first token. Decode time runs from the first
    token to the last, so decode tokens/s is completion tokens over decode time.
    Peak RSS is sampled at most every 50 ms while the reply runs.
    """

    def __init__(self) -> None:
        self.t_start = time.perf_counter()
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.t_end: float | None = None
        self.completion_tokens = 0
        self.peak_rss = rss_bytes()
        self._t_rss = self.t_start

    def token(self, n_tokens: int) -> None:
        """Note that `n_tokens` more tokens arrived now."""
        now = time.perf_counter()
        if n_tokens <= 0:
            return
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.completion_tokens += n_tokens
        if now - self._t_rss >= _RSS_EVERY_S:
            self._t_rss = now
            self.peak_rss = max(self.peak_rss, rss_bytes())

    def finish(self) -> None:
        """Note the end of the reply."""
        self.t_end = time.perf_counter()
        self.peak_rss = max(self.peak_rss, rss_bytes())

    def metrics(
        self,
        info: ModelInfo | None,
        prompt_tokens: int,
        finish_reason: FinishReason,
        tokens_estimated: bool = False,
        error: str | None = None,
    ) -> ReplyMetrics:
        """Derive the reply's metrics from what was recorded."""
        end = self.t_end if self.t_end is not None else time.perf_counter()
        first = self.t_first if self.t_first is not None else end
        last = self.t_last if self.t_last is not None else first
        ttft_s = first - self.t_start
        decode_s = last - first
        return ReplyMetrics(
            model=info.name if info else "",
            backend=info.backend if info else "",
            device=info.device if info else "",
            ttft_ms=ttft_s * 1000 if self.t_first is not None else 0.0,
            prompt_tokens=prompt_tokens,
            prompt_tps=prompt_tokens / ttft_s if self.t_first is not None and ttft_s > 0 else 0.0,
            completion_tokens=self.completion_tokens,
            decode_ms=decode_s * 1000,
            decode_tps=self.completion_tokens / decode_s if decode_s > 0 else 0.0,
            total_ms=(end - self.t_start) * 1000,
            peak_rss_mb=self.peak_rss / 2**20,
            model_file_size=info.file_size if info else None,
            finish_reason=finish_reason,
            tokens_estimated=tokens_estimated,
            error=error,
        )
