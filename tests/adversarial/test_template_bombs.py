"""Crafted chat templates end in bounded time and memory, with one line (they hung or asked
for gigabytes)."""

from __future__ import annotations

import time

import pytest

from engine.chat_template import RENDER_SECONDS, ChatTemplate
from engine.errors import ModelLoadError
from engine.types import ChatMessage


@pytest.mark.parametrize(("template", "said"), [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "ran for over"),
    ("{% for i in range(10**9) %}{% endfor %}", "range of"),
    ("{{ 'x' * 4000000000 }}", "grew too long"),
    ("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}", "rendered"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
    ("{{ 2 ** 100000000 }}", "power"),
    ("{{ raise_exception('line one\\nline two') }}", "line one line two"),
])
def test_a_crafted_template_is_stopped(template: str, said: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match=said) as error:
        ChatTemplate("crafted", template).render([ChatMessage("user", "hi")])
    assert time.monotonic() - start < RENDER_SECONDS + 3
    assert "\n" not in str(error.value)


def test_real_templates_are_unaffected() -> None:
    chatml = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    text = ChatTemplate("t", chatml).render([ChatMessage("user", "hi")] * 50)
    assert text.count("<|im_start|>user") == 50
    loop = "{% for i in range(3) %}{{ i }}{% endfor %}{{ 'ab' * 3 }}{{ 2 ** 10 }}"
    assert ChatTemplate("t", loop).render([]) == "012ababab1024"
