"""Token sampling shared by every backend that samples itself (numpy, fast on a large vocab).

The chain follows llama.cpp's order: repetition penalty, top-k, top-p, min-p, temperature,
then a seeded random draw. Temperature 0 (or top-k 1) is greedy: the argmax after the
repetition penalty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.types import SamplingParams

PENALTY_LAST_N = 64
"""How many recent tokens the repetition penalty looks at (llama.cpp's default)."""

_TOP_P_PROBE = 1024
"""Top-p first tries this many best tokens before sorting the whole vocabulary."""


def apply_repetition_penalty(
    logits: np.ndarray, recent: Sequence[int], penalty: float
) -> np.ndarray:
    """A copy of `logits` with each token in `recent` made less likely (CTRL / llama.cpp rule).

    A positive logit is divided by `penalty`, a negative one multiplied by it.
    """
    out = np.array(logits, dtype=np.float32, copy=True)
    if penalty == 1.0 or len(recent) == 0:
        return out
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    ids = ids[(ids >= 0) & (ids < out.shape[0])]
    chosen = out[ids]
    out[ids] = np.where(chosen > 0, chosen / penalty, chosen * penalty)
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32) - logits.max()
    np.exp(z, out=z)
    z /= z.sum()
    return z


def filter_candidates(
    logits: np.ndarray, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The tokens that survive top-k, then top-p, then min-p: `(ids, logits)`, unordered.

    0 / 1.0 / 0.0 disable a filter; at least one token always survives. Only top-p needs
    an order, and it sorts just enough of the best tokens to cover its mass, so a 50k
    vocabulary costs well under a few milliseconds.
    """
    n = logits.shape[0]
    ids = np.argpartition(-logits, top_k - 1)[:top_k] if 0 < top_k < n else np.arange(n)
    cand = logits[ids]
    if top_p < 1.0:
        probs = _softmax(cand)
        probe = _TOP_P_PROBE
        while True:
            if probe >= len(cand):
                order = np.argsort(-cand)
                break
            best = np.argpartition(-cand, probe - 1)[:probe]
            if probs[best].sum() >= top_p:
                order = best[np.argsort(-cand[best])]
                break
            probe *= 4
        cum = np.cumsum(probs[order], dtype=np.float64)
        keep = min(int(np.searchsorted(cum, top_p, side="left")) + 1, len(order))
        ids, cand = ids[order[:keep]], cand[order[:keep]]
    if min_p > 0.0 and len(ids) > 1:
        # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
        keep_mask = cand >= cand.max() + np.float32(np.log(min_p))
        ids, cand = ids[keep_mask], cand[keep_mask]
    return ids, cand


class Sampler:
    """Picks next tokens for one generation; seeded, so a fixed seed repeats the same reply."""

    def __init__(self, params: SamplingParams, penalty_last_n: int = PENALTY_LAST_N) -> None:
        self.params = params
        self.penalty_last_n = penalty_last_n
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, recent: Sequence[int] = ()) -> int:
        """The next token given the last position's `logits` and the tokens so far."""
        p = self.params
        window = recent[-self.penalty_last_n :] if self.penalty_last_n > 0 else ()
        scores = apply_repetition_penalty(logits, window, p.repeat_penalty)
        if p.greedy:
            return int(np.argmax(scores))
        ids, cand = filter_candidates(scores, p.top_k, p.top_p, p.min_p)
        if len(ids) == 1:
            return int(ids[0])
        probs = _softmax(cand / np.float32(p.temperature))
        cum = np.cumsum(probs)
        pick = int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right"))
        return int(ids[min(pick, len(ids) - 1)])
