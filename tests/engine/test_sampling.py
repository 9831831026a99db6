"""The shared sampler: seeded determinism, the top-k / top-p / min-p filters, repetition penalty."""

from __future__ import annotations

import numpy as np
import pytest

from engine.sampling import Sampler, apply_repetition_penalty, filter_candidates
from engine.types import SamplingParams

VOCAB = 49152


def _logits(seed: int = 0, scale: float = 3.0, n: int = VOCAB) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def _probs(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits.astype(np.float64) - logits.max())
    return z / z.sum()


def _reference_top_p(logits: np.ndarray, top_p: float) -> set[int]:
    """Smallest best-first set whose probability reaches top_p (brute force, float64)."""
    probs = _probs(logits)
    order = np.argsort(-probs)
    cum = np.cumsum(probs[order])
    n = int(np.argmax(cum >= top_p)) + 1 if cum[-1] >= top_p else len(order)
    return set(order[:n].tolist())


def _assert_is_top_p_set(ids: np.ndarray, logits: np.ndarray, top_p: float) -> None:
    """`ids` is a best-first set reaching top_p that would not without its weakest token
    (to float32 rounding of the cumulative sum)."""
    probs = _probs(logits)
    kept = np.zeros(len(logits), bool)
    kept[ids] = True
    assert logits[kept].min() >= logits[~kept].max()
    mass = probs[kept].sum()
    assert mass >= top_p - 1e-5
    assert mass - probs[kept].min() < top_p + 1e-5
    assert len(set(ids.tolist()) ^ _reference_top_p(logits, top_p)) <= 1


def _draw(params: SamplingParams, logits: np.ndarray, n: int = 200) -> list[int]:
    sampler = Sampler(params)
    return [sampler(logits) for _ in range(n)]


def test_the_same_seed_repeats_the_same_tokens_and_another_seed_does_not():
    logits = _logits()
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    first = _draw(params, logits)
    assert first == _draw(params, logits)
    other = _draw(SamplingParams(**{**params.__dict__, "seed": 43}), logits)
    assert first != other
    assert len(set(first)) > 50  # a flat distribution really is sampled, not argmaxed


def test_unseeded_samplers_differ():
    logits = _logits()
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=None)
    assert _draw(params, logits) != _draw(params, logits)


def test_greedy_is_the_argmax():
    logits = _logits(1)
    for params in (SamplingParams(temperature=0.0, repeat_penalty=1.0),
                   SamplingParams(temperature=0.9, top_k=1, repeat_penalty=1.0)):
        assert Sampler(params)(logits) == int(np.argmax(logits))


def test_top_k_keeps_exactly_the_k_best():
    logits = _logits(2)
    ids, cand = filter_candidates(logits, top_k=40)
    assert set(ids.tolist()) == set(np.argsort(-logits)[:40].tolist())
    np.testing.assert_array_equal(cand, logits[ids])
    samples = _draw(SamplingParams(temperature=5.0, top_k=40, top_p=1.0, min_p=0.0, seed=3),
                    logits, 500)
    assert set(samples) <= set(ids.tolist())


@pytest.mark.parametrize("scale", [0.3, 3.0, 12.0])  # flat: whole-vocab sort; peaky: probe
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95])
def test_top_p_keeps_the_smallest_set_reaching_p(scale: float, top_p: float):
    logits = _logits(4, scale)
    ids, _ = filter_candidates(logits, top_p=top_p)
    _assert_is_top_p_set(ids, logits, top_p)


def test_top_p_after_top_k_renormalises_over_the_k():
    logits = _logits(5, 1.0)
    ids, _ = filter_candidates(logits, top_k=100, top_p=0.5)
    best = np.argsort(-logits)[:100]
    expected = {int(best[i]) for i in _reference_top_p(logits[best], 0.5)}
    assert set(ids.tolist()) == expected


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    logits = _logits(6, 4.0)
    ids, _ = filter_candidates(logits, min_p=0.05)
    probs = _probs(logits)
    expected = set(np.nonzero(probs >= 0.05 * probs.max())[0].tolist())
    assert set(ids.tolist()) == expected
    assert 1 <= len(expected) < VOCAB


def test_filters_always_leave_one_token():
    logits = np.zeros(10, np.float32)
    logits[3] = 50.0
    ids, _ = filter_candidates(logits, top_k=5, top_p=0.01, min_p=0.99)
    assert ids.tolist() == [3]


def test_repetition_penalty_follows_the_llama_cpp_rule():
    logits = np.array([2.0, -2.0, 1.0, -1.0, 0.5], np.float32)
    out = apply_repetition_penalty(logits, [0, 1, 1], 2.0)
    np.testing.assert_allclose(out, [1.0, -4.0, 1.0, -1.0, 0.5])
    np.testing.assert_array_equal(logits, [2.0, -2.0, 1.0, -1.0, 0.5])  # input untouched


def test_repetition_penalty_changes_the_greedy_choice_only_within_its_window():
    logits = np.array([3.0, 2.5, 0.0], np.float32)
    params = SamplingParams(temperature=0.0, repeat_penalty=1.5)
    assert Sampler(params)(logits, [0]) == 1
    assert Sampler(params, penalty_last_n=2)(logits, [0, 2, 2]) == 0  # 0 is out of the window
    assert Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0))(logits, [0]) == 0


def test_sample_frequencies_follow_the_tempered_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    for temperature in (1.0, 0.5):
        params = SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0,
                                repeat_penalty=1.0, seed=11)
        samples = np.array(_draw(params, logits, 20000))
        freq = np.bincount(samples, minlength=4) / len(samples)
        expected = _probs(logits / temperature)
        np.testing.assert_allclose(freq, expected, atol=0.015)
