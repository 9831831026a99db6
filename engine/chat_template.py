"""Chat templates (Jinja, from tokenizer_config.json or GGUF metadata), same in every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import ModelLoadError
from engine.types import ChatMessage

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Fallback template for models that ship none."""


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template and where it came from (e.g. "gguf", "tokenizer_config.json", "fallback")."""

    source: str
    template: str
    bos_token: str = ""
    eos_token: str = ""

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """Render a conversation to the prompt text the model expects."""
        try:
            return _compile(self.template).render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            raise ModelLoadError(f"the model's chat template failed to render: {exc}") from exc


def encode_prompt(
    template: ChatTemplate, tokenizer: Any, messages: Sequence[ChatMessage], bos_id: int | None
) -> list[int]:
    """The prompt token ids of `messages`: rendered with `template`, encoded with an HF
    `tokenizers.Tokenizer`, with `bos_id` in front unless the template already wrote it."""
    prompt = template.render(messages)
    ids = list(tokenizer.encode(prompt, add_special_tokens=False).ids)
    if bos_id is not None and not prompt.startswith(template.bos_token):
        ids.insert(0, bos_id)
    return ids


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateError as exc:
        raise ModelLoadError(f"the model's chat template is not valid Jinja: {exc}") from exc
