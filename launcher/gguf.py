"""``prefix-rft import-gguf``: a GGUF file (llama.cpp's format) as a Hugging Face model folder.

transformers reads GGUF with the ``gguf`` package and de-quantises every tensor to ``dtype``; the
tokenizer, its special tokens and the chat template come from the file's metadata. The loaded model
is still marked as GGUF-quantised, which ``save_pretrained`` refuses; after de-quantisation the
weights are plain tensors, so the mark is cleared before saving.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from shared.modeling import load_tokenizer, save_model


class GgufImportError(ValueError):
    pass


def import_gguf(gguf_file: Path, out: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write the model in ``gguf_file`` to ``out`` (config, safetensors, tokenizer, chat template,
    generation config), checked by loading its tokenizer back. GgufImportError for a bad file or ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf_file.is_file():
        raise GgufImportError(f"{gguf_file}: no such file")
    with gguf_file.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise GgufImportError(f"{gguf_file}: not a GGUF file (it does not start with 'GGUF')")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GgufImportError(f"{out} already exists and is not empty: choose another folder")
    where, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=dtype)
    _clear_gguf_quantisation(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_model(model, tokenizer, tmp)
        load_tokenizer(tmp)  # the folder is refused here, not at its first use, if it is unusable
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _clear_gguf_quantisation(model) -> None:
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
