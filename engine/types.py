"""Plain data types shared by every backend and by the async worker."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class Piece:
    """A piece of streamed text and the number of real tokens that produced it.

    `n_tokens` may be 0 for text released late (a held-back stop-string prefix)
    and a piece may carry several tokens (e.g. a multi-byte character).
    """

    text: str
    n_tokens: int = 1


@dataclass
class SamplingParams:
    """Sampling settings understood by every backend."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raise ValueError with a one-line message for an out-of-range value."""
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.repeat_penalty > 0, "repeat_penalty must be > 0"),
            (self.max_tokens >= 1, "max_tokens must be >= 1"),
            (self.seed is None or self.seed >= 0, "seed must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        """True when sampling reduces to argmax."""
        return self.temperature == 0 or self.top_k == 1


@dataclass
class LoadSettings:
    """How to load a model. `None` means: let the backend choose."""

    n_ctx: int = 4096
    n_threads: int | None = None
    n_gpu_layers: int | None = None
    device: str = "auto"
    chat_template: str = ""
    """A built-in template name or a Jinja file to use instead of the model's ("": its own)."""
    label: str = ""
    """The name to show for the model (a catalog or store name; "": from its file name)."""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelInfo:
    """What is loaded, as shown in the picker, the metrics panel and `lampchat models`."""

    name: str
    path: str
    backend: str
    device: str = "cpu"
    format: str = "unknown"
    quantization: str = "unknown"
    n_params: int | None = None
    context_length: int | None = None
    file_size: int | None = None
    chat_template_source: str = "unknown"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class StreamStats:
    """What a backend reports about one generation, filled in while it streams."""

    prompt_tokens: int = 0
    finish_reason: FinishReason | None = None
    tokens_estimated: bool = False


@dataclass
class ReplyMetrics:
    """Per-reply metrics measured by the engine (see `engine.metrics`)."""

    model: str = ""
    backend: str = ""
    device: str = ""
    ttft_ms: float = 0.0
    prompt_tokens: int = 0
    prompt_tps: float = 0.0
    completion_tokens: int = 0
    decode_ms: float = 0.0
    decode_tps: float = 0.0
    total_ms: float = 0.0
    peak_rss_mb: float = 0.0
    model_file_size: int | None = None
    finish_reason: FinishReason = "stop"
    tokens_estimated: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)
