"""Model and tokenizer loading from local Hugging Face directories, and the built-in default model.

The default is built by code, never downloaded: a byte-level BPE tokenizer trained on the built-in
task's text (digits kept as single tokens, so column arithmetic stays learnable) and a small
Qwen2-architecture causal LM initialised from a seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field

# torch and transformers are imported where they are used: importing them takes about 10 s on two
# cores, and the launcher imports this module for folder checks and prompt ids before it starts the
# services (which import them in parallel, in their own processes).
if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast

USER_TAG = "<|user|>"
ASSISTANT_TAG = "<|assistant|>"
EOS = "<|end|>"
PAD = "<|pad|>"
# The assistant turn is left open after the generation prompt: a demonstration prefix is appended
# to these token ids and the model continues it.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}" + USER_TAG + "{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT_TAG + "{{ m['content'] }}" + EOS + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT_TAG + "{% endif %}"
)


class DefaultModelSpec(BaseModel):
    """Architecture of the built-in model; every field enters the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    vocab_size: int = Field(384, ge=300)
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024

    def cache_key(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    root = os.environ.get("PRFT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "prefix-rft"
    )
    return Path(root)


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, USER_TAG, ASSISTANT_TAG],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_default_model(spec: DefaultModelSpec, corpus: Iterable[str], out_dir: Path) -> Path:
    """Write tokenizer + randomly initialised Qwen2 (deterministic from ``spec.seed``) to ``out_dir``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(corpus, spec.vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    save_model(model, tokenizer, out_dir)
    return out_dir


def save_model(model: torch.nn.Module, tokenizer, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    write_companions(out_dir, tokenizer, getattr(model, "generation_config", None))


def write_companions(out_dir: Path, tokenizer, generation_config=None) -> None:
    """Everything but the weights that makes ``out_dir`` a model folder transformers and vLLM load:
    tokenizer files, chat template and generation config (``config.json`` comes with the weights)."""
    tokenizer.save_pretrained(out_dir)
    if generation_config is not None and _has_own_defaults(generation_config):
        generation_config.save_pretrained(out_dir)
    else:
        # vLLM reads generation defaults from here; keep them neutral so requests decide.
        (out_dir / "generation_config.json").write_text(
            json.dumps({"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id})
        )


def _has_own_defaults(generation_config) -> bool:
    """A checkpoint's own generation config (e.g. its sampling defaults) is kept; one transformers
    made up from the model config is replaced by the neutral one."""
    return getattr(generation_config, "_from_model_config", False) is False


def cached_build(cache_dir: Path, name: str, build) -> Path:
    """Run ``build(tmp_dir)`` once per ``name``; concurrent callers wait for the first one."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / name
    with FileLock(str(cache_dir / f"{name}.lock")):
        if (target / "config.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
        try:
            build(tmp)
            os.replace(tmp, target)  # atomic: a half-built model is never visible
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class ModelFolderError(ValueError):
    """A directory that is not a usable model folder; the message says what is missing."""


# Any one of these makes a tokenizer transformers can load (fast, SentencePiece, or byte-level BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)


def check_model_folder(path: str | Path) -> Path:
    """``path`` if it holds a config, weights and tokenizer files; ModelFolderError naming what is missing."""
    path = _checked_dir(path)
    missing = []
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        missing.append("weights (model.safetensors)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"tokenizer files ({', '.join(TOKENIZER_FILES[:-1])} or {TOKENIZER_FILES[-1]})")
    if missing:
        raise ModelFolderError(
            f"{path} is not a complete model folder: it has no {' and no '.join(missing)}. "
            "A run's complete folders are its final/ directory and `prefix-rft export RUN_DIR OUT`."
        )
    return path


def weights_digest(path: str | Path) -> str:
    """A fingerprint of a model folder's weights: the sha256 of its weight files, in name order. Two runs
    that name one base can be checked to have started from the same bytes, whichever machine built them
    (the built-in model's warm-up rounds differently on other CPUs)."""
    path = check_model_folder(path)
    digest = hashlib.sha256()
    for name in sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin")):
        digest.update(name.encode())
        with open(path / name, "rb") as f:
            while chunk := f.read(16 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def load_tokenizer(path: str | Path):
    """The folder's tokenizer, checked to be usable: ModelFolderError (never an empty tokenizer) when not."""
    from transformers import AutoTokenizer

    path = check_model_folder(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{path}: its tokenizer does not load: {exc}") from exc
    if not tokenizer("1 + 1 = 2", add_special_tokens=False)["input_ids"]:
        raise ModelFolderError(f"{path}: its tokenizer encodes text to no tokens (an empty vocabulary)")
    if tokenizer.eos_token_id is None:
        raise ModelFolderError(f"{path}: its tokenizer has no end-of-sequence token (eos_token)")
    return tokenizer


def load_model(path: str | Path, dtype: torch.dtype | None = None):
    """``dtype``: float32 when not given."""
    import torch
    from transformers import AutoModelForCausalLM

    path = _checked_dir(path)
    dtype = torch.float32 if dtype is None else dtype
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)


def _checked_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelFolderError(f"{path} is not a Hugging Face model directory (no config.json)")
    return path


def prompt_token_ids(tokenizer, prompt: str | Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of the prompt with the assistant turn left open (chat template if the model has one).

    ``prompt`` is the user's message or the chat turns (``Problem.messages()``). A template that drops
    the system turn (the built-in model's has none) gets the system text at the head of the user's
    message instead, so a system prompt is never lost silently."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    if getattr(tokenizer, "chat_template", None):
        if system and system not in tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False):
            messages = _system_in_user_turn(messages, system)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    text = "\n\n".join(m["content"] for m in _system_in_user_turn(messages, system) if m["role"] == "user")
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def _system_in_user_turn(messages: list[dict[str, str]], system: str) -> list[dict[str, str]]:
    turns = [m for m in messages if m["role"] != "system"]
    if system and turns and turns[0]["role"] == "user":
        turns[0] = {"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}
    return turns


def response_token_ids(tokenizer, response: str) -> list[int]:
    """Token ids of an assistant response, closed with the end-of-sequence token."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id]
