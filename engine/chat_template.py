"""Chat templates (Jinja, from tokenizer_config.json or GGUF metadata), same in every backend.

A model that ships no template gets a built-in one chosen by its architecture and vocabulary
(`builtin_for`), never one whose special tokens the vocabulary lacks: the built-ins render what
llama.cpp's `llama_chat_apply_template` renders for the same names. Every backend stops on the
end-of-turn tokens the template writes (`end_of_turn_tokens`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from engine.errors import ModelLoadError
from engine.types import ChatMessage

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML, as llama.cpp's "chatml"."""

LLAMA3 = (
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + (message['content'] | trim) + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
"""Llama 3, as llama.cpp's "llama3"."""

GEMMA = (
    "{% set ns = namespace(system='') %}{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% set ns.system = ns.system + (message['content'] | trim) %}"
    "{% else %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if ns.system and role != 'model' %}{{ ns.system + '\n\n' }}"
    "{% set ns.system = '' %}{% endif %}"
    "{{ (message['content'] | trim) + '<end_of_turn>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
"""Gemma (no system role: it is put in front of the first user turn), as llama.cpp's "gemma"."""

PHI3 = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + "
    "'<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
"""Phi-3, as llama.cpp's "phi3"."""

MISTRAL_V3 = (
    "{% set ns = namespace(inside=false) %}{% for message in messages %}"
    "{% if not ns.inside %}{{ '[INST] ' }}{% set ns.inside = true %}{% endif %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ message['content'] + '[/INST]' }}"
    "{% else %}{{ ' ' + (message['content'] | trim) + '</s>' }}{% set ns.inside = false %}"
    "{% endif %}{% endfor %}"
)
"""Mistral with [INST] control tokens, as llama.cpp's "mistral-v3"."""

LLAMA2 = (
    "{{ '[INST] ' }}{% set ns = namespace(inside=true) %}{% for message in messages %}"
    "{% if not ns.inside %}{{ '[INST] ' }}{% set ns.inside = true %}{% endif %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + '</s>' }}{% set ns.inside = false %}{% endif %}"
    "{% endfor %}"
)
"""Llama 2 chat ([INST] as plain text, <<SYS>>), as llama.cpp's "llama2-sys"."""

PLAIN = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ message['content'] + '\n\n' }}{% elif message['role'] == 'user' %}"
    "{{ 'USER: ' + message['content'] + '\n' }}{% else %}"
    "{{ 'ASSISTANT: ' + message['content'] + eos_token + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
"""Plain text turns (Vicuna's layout, ended by the model's own end-of-text token), for a
vocabulary with no chat tokens at all."""


@dataclass(frozen=True)
class Builtin:
    """A built-in template, the special tokens it needs and the one that ends a turn."""

    name: str
    template: str
    requires: tuple[str, ...]
    end_of_turn: str | None


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("gemma", GEMMA, ("<start_of_turn>", "<end_of_turn>"), "<end_of_turn>"),
    Builtin("llama3", LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            "<|eot_id|>"),
    Builtin("phi3", PHI3, ("<|user|>", "<|assistant|>", "<|end|>"), "<|end|>"),
    Builtin("chatml", CHATML, ("<|im_start|>", "<|im_end|>"), "<|im_end|>"),
    Builtin("mistral-v3", MISTRAL_V3, ("[INST]", "[/INST]", "</s>"), "</s>"),
    Builtin("llama2", LLAMA2, ("</s>",), "</s>"),
    Builtin("plain", PLAIN, (), None),
)}
"""Built-in templates, in the order `builtin_for` tries them."""

ARCH_TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma",
                  "gemma3_text": "gemma", "phi3": "phi3", "qwen2": "chatml", "qwen3": "chatml"}
"""Architectures whose family template is known (used when their vocabulary has its tokens)."""

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>",
               "<|endoftext|>", "</s>")
"""Tokens that end a turn in the templates models ship; a reply stops at any of them that the
template writes and the vocabulary has."""


def builtin_for(arch: str | None, vocabulary: Collection[str]) -> Builtin:
    """The built-in template for a model with none: its family's when `arch` names one, else
    the first whose special tokens `vocabulary` has all of ("plain" needs none)."""
    family = BUILTINS.get(ARCH_TEMPLATES.get((arch or "").lower(), ""))
    if family is not None and all(t in vocabulary for t in family.requires):
        return family
    return next(b for b in BUILTINS.values() if all(t in vocabulary for t in b.requires))


def end_of_turn_ids(template: ChatTemplate, token_id: Callable[[str], int | None]) -> list[int]:
    """Ids of the end-of-turn tokens `template` writes; `token_id` looks a token's text up in
    the vocabulary (None when it has no such token)."""
    ids = []
    for text in END_OF_TURN:
        if text in template.template and (i := token_id(text)) is not None and i not in ids:
            ids.append(i)
    return ids


MAX_TEMPLATE_FILE = 1 << 20
"""The largest chat template file read (real ones are a few KB)."""


def chosen_template(own: ChatTemplate, choice: str) -> ChatTemplate:
    """`own` (the model's template), or the one `choice` names instead: a built-in name or
    the path of a Jinja file (`--chat-template`, `model.chat_template`)."""
    choice = choice.strip()
    if not choice:
        return own
    if choice in BUILTINS:
        return ChatTemplate(f"chosen ({choice})", BUILTINS[choice].template, own.bos_token,
                            own.eos_token)
    path = Path(choice).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"chat template {choice!r} is neither a built-in "
                             f"({', '.join(BUILTINS)}) nor a file")
    try:
        if path.stat().st_size > MAX_TEMPLATE_FILE:
            raise ModelLoadError(f"chat template file {path} is over 1 MB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read chat template file {path}: {exc}") from None
    template = ChatTemplate(f"file {path}", text, own.bos_token, own.eos_token)
    _compile(text)  # a template that is not valid Jinja fails here, at load
    return template


def fallback_template(arch: str | None, vocabulary: Collection[str], bos: str,
                      eos: str) -> ChatTemplate:
    """The template for a model that ships none (see `builtin_for`)."""
    builtin = builtin_for(arch, vocabulary)
    return ChatTemplate(f"built-in ({builtin.name})", builtin.template, bos, eos)


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template and where it came from (e.g. "gguf", "tokenizer_config.json", "fallback")."""

    source: str
    template: str
    bos_token: str = ""
    eos_token: str = ""

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """Render a conversation to the prompt text the model expects (within
        `RENDER_SECONDS`, loops and products bounded: a crafted template cannot hang or
        exhaust memory)."""
        _DEADLINE.value = time.monotonic() + RENDER_SECONDS
        try:
            text = _compile(self.template).render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            message = " ".join(str(exc).split())  # raise_exception's text on one line
            raise ModelLoadError(f"the model's chat template failed to render: {message}") \
                from exc
        except (RecursionError, MemoryError, OverflowError) as exc:
            raise ModelLoadError(f"the model's chat template failed to render "
                                 f"({type(exc).__name__})") from exc
        if len(text) > MAX_RENDERED:
            raise ModelLoadError(f"the model's chat template rendered {len(text):,} characters "
                                 "for this conversation; that is not a prompt")
        return text


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


RENDER_SECONDS = 2.0
"""A chat template renders a conversation in milliseconds; one still running after this long
is stopped (a loop within a loop of 100,000 each)."""
MAX_RENDERED = 16 << 20
"""The most characters a template may produce, or a string or list it may multiply up to."""
MAX_LOOP = 100_000
_DEADLINE = threading.local()


def _bounded_range(*args: int) -> Iterator[int]:
    """`range` for templates: at most MAX_LOOP items, and stopped at the render's deadline."""
    items = range(*args)
    if len(items) > MAX_LOOP:
        raise SecurityError(f"range of {len(items):,} items in the chat template")
    return _until_deadline(items)


def _until_deadline(items: range) -> Iterator[int]:
    deadline = getattr(_DEADLINE, "value", None)
    for i, item in enumerate(items):
        if not i & 255 and deadline is not None and time.monotonic() > deadline:
            raise SecurityError(f"the chat template ran for over {RENDER_SECONDS:g} s")
        yield item


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded (`'x' * 4000000000` asked for 4 GB)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > MAX_RENDERED:
                    raise SecurityError("a string or list in the chat template grew too long")
        if operator == "**" and isinstance(right, int) and right > 64:
            raise SecurityError("a power in the chat template is too large")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["range"] = _bounded_range
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateError as exc:
        raise ModelLoadError(f"the model's chat template is not valid Jinja: {exc}") from exc
