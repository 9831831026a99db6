"""Real model store layouts under a test's HOME, each holding the bundled model: Ollama's
(manifest, `sha256-<digest>` blob, params and system layers), a Hugging Face cache written by
`huggingface_hub` itself from the loopback hub, LM Studio's, GPT4All's and llama.cpp's."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.support.fake_hub import FakeHub, HubRepo

OLLAMA_PARAMS = {"stop": ["<|im_end|>", "</answer>"], "temperature": 0.2, "num_ctx": 2048,
                 "top_k": 7}
OLLAMA_SYSTEM = "You are a lighthouse keeper."


def _blob(folder: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (folder / f"sha256-{digest}").write_bytes(data)
    return f"sha256:{digest}"


def make_ollama_store(root: Path, model: Path, name: str = "smollm2", tag: str = "135m") -> Path:
    """An Ollama store at `root` with `model` as `name:tag` (blob hard-linked)."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    target = blobs / f"sha256-{digest}"
    if not target.exists():
        os.link(model, target)
    params = _blob(blobs, json.dumps(OLLAMA_PARAMS).encode())
    system = _blob(blobs, OLLAMA_SYSTEM.encode())
    config = _blob(blobs, b'{"model_format": "gguf", "model_family": "llama"}')
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config, "size": 50},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
             "size": model.stat().st_size},
            {"mediaType": "application/vnd.ollama.image.params", "digest": params, "size": 80},
            {"mediaType": "application/vnd.ollama.image.system", "digest": system, "size": 28},
        ],
    }
    folder = root / "manifests" / "registry.ollama.ai" / "library" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / tag).write_text(json.dumps(manifest))
    return root


def make_hf_cache(cache: Path, model: Path, hub: FakeHub, repo: str = "org/smol-GGUF") -> Path:
    """`repo` (one GGUF) downloaded by `huggingface_hub` from `hub` into `cache`."""
    from huggingface_hub import hf_hub_download

    hub.repos[repo] = HubRepo({"smol.Q4_1.gguf": model.read_bytes(), "README.md": b"# smol"})
    return Path(hf_hub_download(repo, "smol.Q4_1.gguf", cache_dir=cache, endpoint=hub.endpoint))


def make_stores(home: Path, model: Path, hub: FakeHub) -> dict[str, Path]:
    """Every store under `home` (XDG dirs as the tests set them: `home/.cache`, ...)."""
    lmstudio = home / ".lmstudio" / "models" / "lmstudio-community" / "SmolLM2-135M-Instruct-GGUF"
    lmstudio.mkdir(parents=True)
    os.link(model, lmstudio / "SmolLM2-135M-Instruct-Q4_1.gguf")
    (lmstudio / "mmproj-model-f16.gguf").write_bytes(b"GGUF")  # a projector: not listed
    gpt4all = home / ".local" / "share" / "nomic.ai" / "GPT4All"
    gpt4all.mkdir(parents=True)
    os.link(model, gpt4all / "smollm2-chat.gguf")
    llama_cache = home / ".cache" / "llama.cpp"
    llama_cache.mkdir(parents=True)
    os.link(model, llama_cache / "HuggingFaceTB_SmolLM2-GGUF_smollm2-q4_1.gguf")
    return {
        "ollama": make_ollama_store(home / ".ollama" / "models", model),
        "huggingface": make_hf_cache(home / ".cache" / "huggingface" / "hub", model, hub),
        "lmstudio": lmstudio,
        "gpt4all": gpt4all,
        "llama.cpp": llama_cache,
    }
