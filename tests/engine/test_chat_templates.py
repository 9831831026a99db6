"""Built-in chat templates for models that ship none: what llama.cpp renders, chosen by the
model's vocabulary, and a reply that stops at the template's end-of-turn token."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.backends.llama_cpp import LlamaCppBackend
from engine.backends.native import NativeBackend
from engine.chat_template import BUILTINS, ChatTemplate, builtin_for
from engine.types import ChatMessage, LoadSettings, SamplingParams, StreamStats
from tests.support.tiny_gguf import write_llama_gguf

LLAMA_CPP_NAMES = {"chatml": "chatml", "llama3": "llama3", "gemma": "gemma", "phi3": "phi3",
                   "mistral-v3": "mistral-v3", "llama2": "llama2-sys"}
"""Our built-in -> llama.cpp's name for the same template."""

CONVERSATIONS = [
    [("system", "You are kind."), ("user", "Hi"), ("assistant", "Hello!"),
     ("user", "Name three colours.")],
    [("user", "  padded  "), ("assistant", " sure "), ("user", "x")],
    [("user", "only one")],
]


def llama_cpp_render(name: str, messages: list[tuple[str, str]]) -> str:
    """llama.cpp's own `llama_chat_apply_template` for its built-in template `name`."""
    import llama_cpp  # loads llama.cpp's native library

    chat = (llama_cpp.llama_chat_message * len(messages))()
    keep = []
    for i, (role, content) in enumerate(messages):
        keep += [role.encode(), content.encode()]
        chat[i].role, chat[i].content = keep[-2], keep[-1]
    buf = ctypes.create_string_buffer(1 << 14)
    n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(messages), True, buf,
                                            len(buf))
    assert n > 0, name
    return buf.raw[:n].decode()


@pytest.mark.parametrize("name", sorted(LLAMA_CPP_NAMES))
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_builtins_render_what_llama_cpp_renders(name: str, conversation: int) -> None:
    messages = CONVERSATIONS[conversation]
    ours = ChatTemplate("test", BUILTINS[name].template, "<s>", "</s>").render(
        [ChatMessage(role, content) for role, content in messages])
    assert ours == llama_cpp_render(LLAMA_CPP_NAMES[name], messages)


def test_the_family_or_the_vocabulary_picks_the_template() -> None:
    gemma = {"<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"}
    assert builtin_for("gemma3", gemma).name == "gemma"
    assert builtin_for("llama", gemma).name == "gemma"  # the vocabulary says so
    assert builtin_for("gemma3", {"<|im_start|>", "<|im_end|>"}).name == "chatml"
    assert builtin_for("phi3", {"<|user|>", "<|assistant|>", "<|end|>", "<|im_start|>",
                                "<|im_end|>"}).name == "phi3"
    llama3 = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}
    assert builtin_for("llama", llama3).name == "llama3"
    assert builtin_for("llama", {"[INST]", "[/INST]", "<s>", "</s>"}).name == "mistral-v3"
    assert builtin_for("llama", {"<s>", "</s>", "<unk>"}).name == "llama2"
    assert builtin_for("gpt2", {"<|endoftext|>"}).name == "plain"


SPECIALS = sorted({t for b in BUILTINS.values() for t in b.requires})


@given(st.sets(st.sampled_from(SPECIALS)), st.sampled_from(["llama", "gemma3", "phi3", "qwen2",
                                                             "gpt2", ""]))
def test_never_a_template_whose_special_tokens_the_vocabulary_lacks(vocabulary, arch) -> None:
    chosen = builtin_for(arch, vocabulary)
    assert set(chosen.requires) <= vocabulary
    rendered = ChatTemplate("t", chosen.template, "", "").render(
        [ChatMessage("system", "s"), ChatMessage("user", "u"), ChatMessage("assistant", "a")])
    assert all(token in vocabulary for token in SPECIALS if token in rendered
               and token not in ("[INST]", "[/INST]"))  # llama2 writes [INST] as plain text


@pytest.fixture(scope="module")
def gemma_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF without a chat template whose vocabulary has Gemma's turn tokens instead of
    ChatML's; all its logits are 0, so greedy decoding picks token 0, <end_of_turn>."""
    return write_llama_gguf(tmp_path_factory.mktemp("tpl") / "gemma-like.gguf",
                            renames={0: "<end_of_turn>", 1: "<start_of_turn>", 2: "<eos>"},
                            zero_logits=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend_cls", [LlamaCppBackend, NativeBackend])
def test_a_gguf_without_a_template_gets_its_familys_and_stops_at_its_end_of_turn(
    gemma_like: Path, backend_cls: type,
) -> None:
    import llama_cpp  # loads llama.cpp's native library

    messages = [ChatMessage(r, c) for r, c in CONVERSATIONS[0]]
    reference = llama_cpp.Llama(str(gemma_like), n_ctx=256, verbose=False)
    expected = reference.tokenize(
        llama_cpp_render("gemma", CONVERSATIONS[0]).encode(), add_bos=False, special=True)
    reference.close()
    backend = backend_cls()
    info = backend.load(str(gemma_like), LoadSettings(n_ctx=256, device="cpu"))
    try:
        assert info.chat_template_source == "built-in (gemma)"
        assert list(backend.tokenize_prompt(messages)) == expected
        stats = StreamStats()
        reply = "".join(p.text for p in backend.stream(
            messages, SamplingParams(temperature=0.0, max_tokens=16), stats))
        assert reply == "" and stats.finish_reason == "stop"  # stopped at <end_of_turn>
    finally:
        backend.unload()


@pytest.mark.slow
def test_ask_json_names_the_template_and_the_reply_holds_no_template_markup(
    gemma_like: Path,
) -> None:
    import json

    from tests.support.cli import run_lampchat

    result = run_lampchat("ask", "--json", "-m", str(gemma_like), "--backend", "llama.cpp",
                          "--temperature", "0", "-n", "8", "Name three colours.")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["chat_template"] == "built-in (gemma)"
    assert reply["text"] == "" and reply["finish_reason"] == "stop"


@pytest.mark.slow
def test_the_template_can_be_chosen_by_name_file_or_config(tmp_path: Path) -> None:
    """`--chat-template NAME|FILE` and `model.chat_template` replace the model's template in
    every backend; a name that is neither a built-in nor a file is one clear line."""
    import json

    from tests.support.cli import run_lampchat

    def ask(*args: str, env: dict[str, str] | None = None) -> dict:
        result = run_lampchat("ask", "--json", "--temperature", "0", "-n", "4", *args, "Hi",
                              env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert ask()["chat_template"] == "gguf"  # the bundled model's own
    assert ask("--chat-template", "llama3")["chat_template"] == "chosen (llama3)"
    jinja = tmp_path / "mine.jinja"
    jinja.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    assert ask(env={"LAMPCHAT_MODEL__CHAT_TEMPLATE": str(jinja)})["chat_template"] == \
        f"file {jinja}"
    assert ask("--backend", "native", "--chat-template", "plain")["chat_template"] == \
        "chosen (plain)"
    bad = run_lampchat("ask", "--chat-template", "no-such-template", "Hi")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "chat template 'no-such-template' is neither a built-in" in bad.stderr
