"""The prompts bench uses: random-ish word prompts of an exact token count, and chat prompts."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from engine.types import ChatMessage

TTFT_PROMPT = "What is the capital of France?"
"""The short chat prompt whose time to first token bench reports."""

TG_PROMPT = "Write a long story about a lighthouse keeper and a storm."
"""A prompt that makes chat models write at length, so tgN generates N tokens."""

_WORD_TEXT = (
    "apple river stone cloud garden window silver morning yellow forest candle bridge engine "
    "pocket winter summer orange letter market island planet rabbit shadow thunder violin "
    "marble copper harbor lantern meadow pencil ribbon saddle tunnel velvet whistle anchor "
    "basket cactus dragon feather glacier hammer jacket kettle ladder magnet needle oyster "
    "parrot quilt rocket sailor tiger umbrella valley walnut yogurt zebra blanket castle "
    "desert falcon guitar helmet igloo jungle kitten lemon mirror nest olive pepper quartz "
    "rose spider tomato unicorn vessel wagon crystal button cotton dinner finger hollow "
    "mountain number paper question silence table timber village water yard circle dance "
    "echo frost gentle honey ivory jelly kingdom lizard maple north ocean puzzle quiet "
    "rain sugar travel under vivid wool young zone bright carpet distant elbow fabric gold"
)
_WORDS = _WORD_TEXT.split()

Tokenize = Callable[[Sequence[ChatMessage]], list[int]]
"""A backend's own prompt tokenization (chat template included)."""


def random_words(count: int, seed: int) -> str:
    """`count` words drawn with a fixed seed (different seeds share no prefix, in practice)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def _messages(words: int, seed: int) -> list[ChatMessage]:
    return [ChatMessage("user", random_words(max(1, words), seed))]


def prompt_of_tokens(n_tokens: int, seed: int, tokenize: Tokenize | None) -> list[ChatMessage]:
    """A one-message chat whose rendered prompt is `n_tokens` tokens long (template included).

    With `tokenize` the length is searched for and is exact, or a token or two short when no
    word count hits it exactly; without it, about 1.3 tokens per word is assumed (the real
    count is read from the reply's metrics afterwards).
    """
    if tokenize is None:
        return _messages(round(n_tokens / 1.3), seed)
    lo, hi = 1, max(2, n_tokens)
    best = 1
    while lo <= hi:  # the largest word count whose prompt fits in n_tokens
        mid = (lo + hi) // 2
        if len(tokenize(_messages(mid, seed))) <= n_tokens:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return _messages(best, seed)


def chat(prompt: str) -> list[ChatMessage]:
    """A one-message chat."""
    return [ChatMessage("user", prompt)]
