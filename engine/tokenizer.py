"""Tokenizers through HF `tokenizers`: from a tokenizer.json, or built from a GGUF vocabulary.

GGUF vocabularies come in two styles:
- "gpt2": byte-level BPE with merges; the pre-tokenizer regex follows `tokenizer.ggml.pre`
  exactly as llama.cpp does (e.g. "smollm" isolates every digit before the GPT-2 regex);
- "llama": SentencePiece with scores; rebuilt as a byte-fallback BPE whose merges are ranked by
  the score of the merged piece, which is how llama.cpp's SPM tokenizer picks merges.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from engine.errors import ModelLoadError

log = logging.getLogger(__name__)

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = (
    1, 2, 3, 4, 5, 6)

_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_RE = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_RE = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_REGEXES: dict[str, tuple[str, ...]] = {
    "default": (_GPT2_RE,),
    "gpt-2": (_GPT2_RE,),
    "gpt2": (_GPT2_RE,),
    "smollm": (r"\p{N}", _GPT2_RE),
    "llama3": (_LLAMA3_RE,),
    "llama-bpe": (_LLAMA3_RE,),
    "qwen2": (_QWEN2_RE,),
}
"""llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), by `tokenizer.ggml.pre` name."""

EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
             "<|end_of_text|>", "<|eom_id|>", "<|return|>", "<|call|>")
"""Control tokens llama.cpp also treats as end of generation."""


@dataclass
class GGUFVocab:
    """The tokenizer part of a GGUF file's metadata."""

    model: str
    tokens: list[str]
    token_types: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    pre: str = "default"
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    extra_eos_ids: list[int] = field(default_factory=list)
    add_bos: bool | None = None
    add_eos: bool = False
    add_space_prefix: bool = True

    def token_type(self, i: int) -> int:
        """The GGUF token type of id `i` (NORMAL when absent)."""
        return self.token_types[i] if i < len(self.token_types) else TOKEN_NORMAL

    def eos_ids(self) -> list[int]:
        """End-of-generation ids: eos, eot/eom, and control tokens llama.cpp treats as such."""
        ids: list[int] = []
        for i in [self.eos_id, *self.extra_eos_ids]:
            if i is not None and 0 <= i < len(self.tokens) and i not in ids:
                ids.append(i)
        for i, text in enumerate(self.tokens):
            if text in EOG_TEXTS and self.token_type(i) == TOKEN_CONTROL and i not in ids:
                ids.append(i)
        return ids

    def token_text(self, i: int | None) -> str:
        """The text of token `i`, or "" if absent."""
        if i is None or not 0 <= i < len(self.tokens):
            return ""
        return self.tokens[i]


def vocab_from_gguf_fields(get: Any) -> GGUFVocab | None:
    """A GGUFVocab from a `get(key, default)` metadata accessor, or None if it has no vocab."""
    tokens = get("tokenizer.ggml.tokens")
    model = get("tokenizer.ggml.model")
    if not tokens or not model:
        return None

    def opt_int(key: str) -> int | None:
        value = get(key)
        return int(value) if value is not None else None

    add_bos = get("tokenizer.ggml.add_bos_token")
    extra = [opt_int(k) for k in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")]
    return GGUFVocab(
        model=str(model),
        tokens=list(tokens),
        token_types=[int(t) for t in (get("tokenizer.ggml.token_type") or [])],
        scores=[float(s) for s in (get("tokenizer.ggml.scores") or [])],
        merges=list(get("tokenizer.ggml.merges") or []),
        pre=str(get("tokenizer.ggml.pre") or "default"),
        bos_id=opt_int("tokenizer.ggml.bos_token_id"),
        eos_id=opt_int("tokenizer.ggml.eos_token_id"),
        unk_id=opt_int("tokenizer.ggml.unknown_token_id"),
        extra_eos_ids=[i for i in extra if i is not None],
        add_bos=None if add_bos is None else bool(add_bos),
        add_eos=bool(get("tokenizer.ggml.add_eos_token") or False),
        add_space_prefix=bool(get("tokenizer.ggml.add_space_prefix", True)),
    )


def tokenizer_from_gguf_vocab(vocab: GGUFVocab) -> Any:
    """A `tokenizers.Tokenizer` equivalent to llama.cpp's tokenizer for this vocabulary."""
    if vocab.model == "gpt2":
        tok = _bpe_tokenizer(vocab)
        add_bos_default = False
    elif vocab.model == "llama":
        tok = _spm_tokenizer(vocab)
        add_bos_default = True
    else:
        raise ModelLoadError(
            f"GGUF tokenizer model {vocab.model!r} is not supported (supported: gpt2, llama)"
        )
    _add_special_tokens(tok, vocab)
    add_bos = add_bos_default if vocab.add_bos is None else vocab.add_bos
    _set_post_processor(tok, vocab, add_bos, vocab.add_eos)
    return tok


def _bpe_tokenizer(vocab: GGUFVocab) -> Any:

    ids = {text: i for i, text in enumerate(vocab.tokens)}
    merges = []
    for m in vocab.merges:
        left, sep, right = m.partition(" ")
        if not sep:
            raise ModelLoadError(f"GGUF merge {m!r} is not two space-separated pieces")
        merges.append((left, right))
    model = models.BPE(vocab=ids, merges=merges, fuse_unk=False, byte_fallback=False,
                       ignore_merges=vocab.pre in ("llama3", "llama-bpe"))
    tok = Tokenizer(model)
    regexes = PRE_TOKENIZER_REGEXES.get(vocab.pre)
    if regexes is None:
        log.warning("GGUF pre-tokenizer %r is not known; using the GPT-2 regex", vocab.pre)
        regexes = PRE_TOKENIZER_REGEXES["default"]
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in regexes]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def spm_merges(tokens: Sequence[str], scores: Sequence[float],
               types: Sequence[int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece scores: every split of a vocabulary piece into two
    vocabulary pieces, best-scoring merged piece first."""
    ids = {}
    for i, text in enumerate(tokens):
        ttype = types[i] if i < len(types) else TOKEN_NORMAL
        if ttype in (TOKEN_NORMAL, TOKEN_USER_DEFINED):
            ids.setdefault(text, i)
    ranked: list[tuple[float, int, int, str, str]] = []
    for text, i in ids.items():
        score = scores[i] if i < len(scores) else 0.0
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in ids and right in ids:
                ranked.append((-score, i, cut, left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def _spm_tokenizer(vocab: GGUFVocab) -> Any:

    ids: dict[str, int] = {}
    for i, text in enumerate(vocab.tokens):
        ids.setdefault(text, i)
    unk = vocab.token_text(vocab.unk_id) or None
    model = models.BPE(
        vocab=ids,
        merges=spm_merges(vocab.tokens, vocab.scores, vocab.token_types),
        unk_token=unk,
        fuse_unk=True,
        byte_fallback=True,
    )
    tok = Tokenizer(model)
    steps = [normalizers.Replace(" ", "\u2581")]
    if vocab.add_space_prefix:
        steps.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    return tok


def _add_special_tokens(tok: Any, vocab: GGUFVocab) -> None:

    special, user = [], []
    for i, text in enumerate(vocab.tokens):
        ttype = vocab.token_type(i)
        if ttype == TOKEN_CONTROL:
            special.append(AddedToken(text, special=True, normalized=False))
        elif ttype == TOKEN_USER_DEFINED:
            user.append(AddedToken(text, special=False, normalized=False))
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def _set_post_processor(tok: Any, vocab: GGUFVocab, add_bos: bool, add_eos: bool) -> None:

    bos = vocab.token_text(vocab.bos_id) if add_bos else ""
    eos = vocab.token_text(vocab.eos_id) if add_eos else ""
    if not bos and not eos:
        return
    single = " ".join(p for p in (bos and f"{bos}:0", "$A:0", eos and f"{eos}:0") if p)
    pair = " ".join(p for p in (single, "$B:1") if p)
    specials = [(t, i) for t, i in ((bos, vocab.bos_id), (eos, vocab.eos_id)) if t]
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=specials
    )


def load_tokenizer_json(path: Path) -> Any:
    """A `tokenizers.Tokenizer` from a tokenizer.json file, or ModelLoadError."""

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise ModelLoadError(f"tokenizer file is damaged: {path} ({exc})") from exc
