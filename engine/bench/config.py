"""What a bench run measures: the run's settings and the (model, backend, device) cases."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.models import default_model_path
from engine.remote_api import safe_url

DEFAULT_REPETITIONS = 5
DEFAULT_PP = (128, 512)
DEFAULT_TG = 128
DEFAULT_N_CTX = 4096
DEFAULT_TIMEOUT_S = 3600.0


@dataclass
class BenchConfig:
    """Settings of one `lampchat bench` run. Empty lists mean: everything this install has."""

    models: list[str] = field(default_factory=list)
    """Model paths or names; empty: the default model."""
    backends: list[str] = field(default_factory=list)
    """Backends; empty: every backend that reads each model's format."""
    devices: list[str] = field(default_factory=list)
    """Devices; empty: every device each backend can use here."""
    repetitions: int = DEFAULT_REPETITIONS
    pp: tuple[int, ...] = DEFAULT_PP
    tg: int = DEFAULT_TG
    threads: int | None = None
    """CPU threads; None: the backend's default (llama.cpp: physical cores)."""
    n_ctx: int = DEFAULT_N_CTX
    raw: bool = True
    """Also time each backend's raw library call (the overhead baseline)."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Per case: a child still running after this long is stopped and reported failed."""
    remote: dict[str, Any] = field(default_factory=dict)
    """The remote backend's endpoint options (`LoadSettings.options`); never in reports."""

    def validate(self) -> None:
        """Raise ValueError with a one-line message for a setting out of range."""
        if self.repetitions < 1:
            raise ValueError("repetitions must be >= 1")
        if not self.pp or any(n < 1 for n in self.pp):
            raise ValueError("prompt sizes (-p) must be >= 1")
        if self.tg < 2:
            raise ValueError("the generation size (-n) must be >= 2 (decode speed needs two)")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        need = max(self.pp) + self.tg + 64
        if self.n_ctx and self.n_ctx < need:
            raise ValueError(f"the context ({self.n_ctx}) is too small for these sizes "
                             f"(needs at least {need})")
        if self.timeout_s <= 0:
            raise ValueError("the timeout must be > 0")

    @property
    def test_names(self) -> list[str]:
        """The figures measured per case, in order: ppN..., tgN, ttft_ms."""
        return [f"pp{n}" for n in self.pp] + [f"tg{self.tg}", "ttft_ms"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["pp"] = list(self.pp)
        del out["remote"]  # may hold an API key
        if self.remote:

            out["remote_url"] = safe_url(str(self.remote.get("base_url") or ""))
        return out


@dataclass
class CaseSpec:
    """One (model, backend, device) measured in a child process; what the parent sends it."""

    model: str
    backend: str
    device: str
    repetitions: int = DEFAULT_REPETITIONS
    pp: list[int] = field(default_factory=lambda: list(DEFAULT_PP))
    tg: int = DEFAULT_TG
    threads: int | None = None
    n_ctx: int = DEFAULT_N_CTX
    raw: bool = True
    log_file: str | None = None
    error: str | None = None
    """Set when the case is known to fail before running (e.g. an unreadable model)."""
    status: str = "failed"
    """The status of a case that does not run (`error` set): "failed" or "skipped"."""
    options: dict[str, Any] = field(default_factory=dict)
    """`LoadSettings.options` (the remote endpoint; API keys as plain strings)."""

    @classmethod
    def for_config(cls, config: BenchConfig, model: str, backend: str, device: str,
                   log_file: str | None = None, error: str | None = None,
                   status: str = "failed") -> CaseSpec:
        """A case with the run's settings."""
        options: dict[str, Any] = {}
        if backend == "remote":
            options = {k: (v.reveal() if hasattr(v, "reveal") else v)
                       for k, v in config.remote.items()}
        return cls(model=model, backend=backend, device=device,
                   repetitions=config.repetitions, pp=list(config.pp), tg=config.tg,
                   threads=config.threads, n_ctx=config.n_ctx, raw=config.raw,
                   log_file=log_file, error=error, status=status, options=options)

    @property
    def label(self) -> str:
        """E.g. "llama.cpp · cpu · model.gguf"."""
        name = self.model.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
        if self.backend == "remote":

            where = safe_url(str(self.options.get("base_url") or ""))
            return f"remote · {where or self.options.get('endpoint_name') or '?'} · " + (
                "server's model" if _is_default(self.model) else name)
        return f"{self.backend} · {self.device} · {name}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the child process only: it may hold an API key)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseSpec:
        """The inverse of `to_dict`."""
        return cls(**data)


def _is_default(model: str) -> bool:

    return not model or model == str(default_model_path())
