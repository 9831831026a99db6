"""Token ids to text as every backend streams it: a reply that ends inside a character ends
with U+FFFD, the same in the tokenizers path (native, ONNX, MLX) as in llama.cpp's."""

from __future__ import annotations

from collections.abc import Iterator

from engine.formats.gguf_file import GGUFFile
from engine.models import default_model_path
from engine.textstream import Utf8Assembler, token_pieces
from engine.tokenizer import tokenizer_from_gguf_vocab, vocab_from_gguf_fields


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character map of byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _gen(ids: list[int]) -> Iterator[int]:
    yield from ids


def test_a_reply_cut_inside_a_character_ends_with_the_replacement_character() -> None:
    fields = GGUFFile(default_model_path()).fields
    tokenizer = tokenizer_from_gguf_vocab(vocab_from_gguf_fields(fields.get))
    byte_token = _bytes_to_unicode()
    euro = "€".encode()
    ids = [tokenizer.token_to_id("a"), *[tokenizer.token_to_id(byte_token[b]) for b in euro[:2]]]
    pieces = list(token_pieces(_gen(ids), tokenizer, []))
    assert "".join(p.text for p in pieces) == "a\ufffd"
    assert sum(p.n_tokens for p in pieces) == 3
    # what the llama.cpp backend's assembler gives for the same bytes
    utf8 = Utf8Assembler()
    assert utf8.feed(b"a" + euro[:2]) + utf8.flush() == "a\ufffd"
    # a whole character is not touched
    whole = [tokenizer.token_to_id(byte_token[b]) for b in euro]
    assert "".join(p.text for p in token_pieces(_gen(whole), tokenizer, [])) == "€"
