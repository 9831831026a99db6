"""Command-line options shared by `lampchat`, `lampchat ask` and other subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.config_schema import SCHEMA
from app.history import Conversation
from engine.devices import parse_device
from engine.errors import LampchatError
from engine.types import LoadSettings, SamplingParams


def _setting(dotted: str) -> Callable[[str], Any]:
    """A flag read and checked as the config key `dotted` is (type, range, finite numbers):
    one validation for flags, the environment, the config file and `/set`."""
    field = SCHEMA[dotted.split(".")[0]][dotted.split(".")[1]]

    def parse(text: str) -> Any:
        try:
            return field.coerce(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; allowed: {field.allowed()}") from None

    parse.__name__ = field.type.__name__
    return parse


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """--config PATH (else $LAMPCHAT_CONFIG, else the platform's config dir)."""
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $LAMPCHAT_CONFIG or the "
        "platform's config dir, see `lampchat config path`)"
    )


def add_history_options(parser: argparse.ArgumentParser) -> None:
    """--save-history PATH and --load-history PATH (see README "History file format")."""
    group = parser.add_argument_group("history")
    group.add_argument(
        "--load-history", metavar="PATH",
        help="start from the conversation in PATH; the model sees it as context",
    )
    group.add_argument(
        "--save-history", metavar="PATH",
        help="write the conversation to PATH as it happens (kept on Ctrl+C, SIGTERM, SIGHUP)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --backend, --threads, --ctx, --gpu-layers, --device."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        "-m",
        metavar="PATH",
        help="model file or folder (default: the bundled SmolLM2-135M-Instruct)",
    )
    group.add_argument(
        "--backend", "-b", metavar="NAME", help="auto, llama.cpp, native, mlx, onnx or remote"
    )
    group.add_argument("--threads", type=_setting("backend.threads"), metavar="N",
                       help="CPU threads (0: a number for this machine)")
    group.add_argument("--ctx", type=_setting("generation.context_length"), metavar="N",
                       help="context length (0: the model's)")
    group.add_argument("--gpu-layers", type=_setting("backend.gpu_layers"), metavar="N",
                       help="layers to offload (-1: all)")
    group.add_argument(
        "--device", type=_device, metavar="DEV",
        help="auto, cpu, gpu, cuda, metal, opencl, ... or KIND:N (see `lampchat devices`)",
    )
    group.add_argument(
        "--chat-template", metavar="NAME|FILE",
        help="chat template instead of the model's: chatml, llama3, gemma, phi3, mistral-v3, "
             "llama2, plain, or a Jinja file",
    )
    add_remote_options(parser)


class _SelectsRemote(argparse.Action):
    """Stores the value; makes the backend "remote" unless --backend names one."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        if getattr(namespace, "backend", None) is None:
            namespace.backend = "remote"


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    """--base-url, --api-key-env, --endpoint: an OpenAI-compatible server (see app.remote_catalog).
    """
    group = parser.add_argument_group("remote server (OpenAI-compatible; implies --backend remote)")
    group.add_argument("--base-url", metavar="URL", action=_SelectsRemote,
                       help="the server, e.g. http://127.0.0.1:8080/v1 (--model: its model name)")
    group.add_argument("--api-key-env", metavar="VAR", action=_SelectsRemote,
                       help="environment variable holding the server's API key")
    group.add_argument("--endpoint", metavar="NAME", action=_SelectsRemote,
                       help="a [remote.NAME] endpoint from the config")


def _device(text: str) -> str:
    try:
        parse_device(text)
    except LampchatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip().lower()


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """--system and the sampling settings."""
    group = parser.add_argument_group("generation")
    group.add_argument("--system", metavar="TEXT", help="system prompt")
    for flag, key, meta in (("--temperature", "temperature", "T"), ("--top-k", "top_k", "K"),
                            ("--top-p", "top_p", "P"), ("--min-p", "min_p", "P"),
                            ("--repeat-penalty", "repeat_penalty", "R"),
                            ("--max-tokens", "max_tokens", "N"), ("--seed", "seed", "N")):
        short = {"temperature": ["-t"], "max_tokens": ["-n"]}.get(key, [])
        group.add_argument(flag, *short, type=_setting(f"generation.{key}"), metavar=meta)


def sampling_from_args(
    args: argparse.Namespace, base: SamplingParams | None = None
) -> SamplingParams:
    """`base` with every sampling option given on the command line applied."""
    given = {
        name: getattr(args, name)
        for name in (
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "repeat_penalty",
            "max_tokens",
            "seed",
        )
        if getattr(args, name, None) is not None
    }
    if given.get("seed") == -1:  # as in the config: -1 picks a new seed each time
        given["seed"] = None
    return replace(base or SamplingParams(), **given)


def load_settings_from_args(
    args: argparse.Namespace, base: LoadSettings | None = None, config: Any = None
) -> LoadSettings:
    """`base` with --threads, --ctx, --gpu-layers and --device applied, and the remote
    endpoint (--base-url, --api-key-env, --endpoint, `[remote]` in `config`) when the backend
    is remote (`config`: the app.config.Config in use; read from --config when needed)."""
    settings = replace(base or LoadSettings())
    if getattr(args, "threads", None) is not None:
        settings.n_threads = args.threads
    if getattr(args, "ctx", None) is not None:
        settings.n_ctx = args.ctx
    if getattr(args, "gpu_layers", None) is not None:
        settings.n_gpu_layers = args.gpu_layers
    if getattr(args, "device", None) is not None:
        settings.device = args.device
    if getattr(args, "chat_template", None):
        settings.chat_template = args.chat_template
    from app.remote_catalog import remote_options_from_args  # here: loads httpx only when run

    remote = remote_options_from_args(args, config)
    if remote:  # the remote backend's endpoint: --base-url, --api-key-env, --endpoint, config
        settings.options = {**settings.options, **remote}
    return settings


# -- the TUI's options ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model the app can load: what `EngineWorker.load` takes, and a label."""

    model: str
    backend: str = "auto"
    label: str = ""
    entry: Any = field(default=None, compare=False)
    """The catalog's `ModelEntry` when it came from one (its store's defaults, its name)."""

    @property
    def title(self) -> str:
        """A short name for menus."""
        return self.label or Path(self.model).name or self.model


@dataclass
class TuiOptions:
    """Everything the TUI starts with, resolved from CLI flags, environment and config."""

    model: str | None = None
    backend: str = "auto"
    load: LoadSettings = field(default_factory=LoadSettings)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    system_prompt: str = ""
    theme: str = "textual-dark"
    show_metrics: bool = False
    resume: bool = False
    """Start on the most recently updated saved conversation (`session.resume`)."""
    log_window: int = 60
    config: Any = None
    """The `app.config.Config` in use (None when config support is unavailable)."""
    save_theme: Callable[[str], None] | None = None
    """Persists the theme choice (ui.theme)."""
    prompt_history: Any = None
    """An `app.prompt_history` store with `items()` and `add(text)`, or None (memory only)."""
    list_models: Callable[[], list[ModelSpec]] | None = None
    """Models for the command palette (default: the config's model catalog)."""
    skip_initial_load: bool = False
    load_history: Conversation | None = None
    """The conversation to start with (--load-history), already read."""
    quiet_errors: bool = False
    """On an exception nothing handled, log it and exit with a one-line message instead of
    Textual's on-screen traceback (the `lampchat` command sets it; tests keep Textual's)."""
    forced_exit_s: float | None = None
    """After a signal, end the process this many seconds later if it has not exited (the
    `lampchat` command sets it; None in tests)."""


def options_from_config(config: Any, base: TuiOptions | None = None) -> TuiOptions:
    """TuiOptions from an `app.config.Config` (CLI flags go on top, see `options_from_args`)."""
    base = base or TuiOptions()
    if config is None:
        return base
    return replace(
        base,
        model=config.model(),
        backend=config.backend(),
        load=config.load_settings(),
        sampling=config.sampling(),
        system_prompt=config.system_prompt() or "",
        theme=str(config.get("ui.theme")),
        show_metrics=bool(config.get("ui.show_metrics")),
        resume=bool(config.get("session.resume")),
        config=config,
    )


def options_from_args(args: argparse.Namespace, base: TuiOptions) -> TuiOptions:
    """`base` with the command line's flags applied (flags win over everything)."""
    options = replace(
        base,
        sampling=sampling_from_args(args, base.sampling),
        load=load_settings_from_args(args, base.load, base.config),
    )
    if getattr(args, "model", None):
        options.model = args.model
    if getattr(args, "backend", None):
        options.backend = args.backend
    if getattr(args, "system", None) is not None:
        options.system_prompt = args.system
    return options
