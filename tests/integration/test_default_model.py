"""The built-in default model: built locally, deterministic, cached, loadable, weak but not hopeless."""

import re
import time

import pytest
import torch
from safetensors.torch import load_file

from shared.base_policy import DefaultPolicySpec, default_init_model
from shared.datasets.arithmetic import ArithmeticDataset
from shared.modeling import load_model, load_tokenizer, prompt_token_ids, response_token_ids

pytestmark = pytest.mark.integration


def test_init_model_is_deterministic_and_quick_to_build(tmp_path):
    started = time.monotonic()
    first = default_init_model(cache_dir=tmp_path / "a")
    build_seconds = time.monotonic() - started
    second = default_init_model(cache_dir=tmp_path / "b")
    weights_a = load_file(first / "model.safetensors")
    weights_b = load_file(second / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    assert build_seconds < 60, f"building the default model took {build_seconds:.0f} s"


def test_cache_returns_the_same_directory_without_rebuilding(tmp_path):
    first = default_init_model(cache_dir=tmp_path)
    mtime = (first / "model.safetensors").stat().st_mtime
    assert default_init_model(cache_dir=tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime == mtime


def test_a_different_seed_gives_different_weights(tmp_path):
    spec = DefaultPolicySpec()
    other = spec.model_copy(update={"model": spec.model.model_copy(update={"seed": 1})})
    a = load_file(default_init_model(spec, tmp_path) / "model.safetensors")
    b = load_file(default_init_model(other, tmp_path) / "model.safetensors")
    assert not torch.equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])


def test_the_base_policy_refuses_teacher_demonstrations():
    # Its tokenizer and warm-up are built from the column style; teacher traces are for training runs.
    with pytest.raises(ValueError, match="column"):
        DefaultPolicySpec(dataset=ArithmeticDataset(demonstrations="teacher"))


def test_loads_as_a_qwen2_causal_lm_with_digits_as_single_tokens(default_init_dir):
    model = load_model(default_init_dir)
    tokenizer = load_tokenizer(default_init_dir)
    assert model.config.model_type == "qwen2"
    n_params = sum(p.numel() for p in model.parameters())
    assert 5e5 < n_params < 5e6
    ids = tokenizer("47+25=72", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == list("47+25=72")
    text = "Ann has 12 apples.\n12+3: 2+3=5, 1+0=1, so 15.\nThe answer is \\boxed{15}."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_prompt_leaves_the_assistant_turn_open(default_init_dir):
    tokenizer = load_tokenizer(default_init_dir)
    prompt = prompt_token_ids(tokenizer, "What is 1+1?")
    response = response_token_ids(tokenizer, "\\boxed{2}")
    assert tokenizer.decode(prompt) == "<|user|>What is 1+1?<|assistant|>"
    assert response[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(prompt + response) == "<|user|>What is 1+1?<|assistant|>\\boxed{2}<|end|>"


def _greedy_correct(model_dir, problems, batch: int = 16) -> list[bool]:
    """Whether each problem's greedy answer (transformers, batches left-padded) is right."""
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"
    model = load_model(model_dir).eval()
    correct = []
    for start in range(0, len(problems), batch):
        chunk = problems[start:start + batch]
        prompts = [prompt_token_ids(tokenizer, p.prompt) for p in chunk]
        inputs = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=160, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        for problem, row in zip(chunk, out[:, inputs["input_ids"].shape[1]:]):
            found = re.findall(r"\\boxed\{(\d+)\}", tokenizer.decode(row, skip_special_tokens=True))
            correct.append(bool(found) and found[-1] == problem.answer)
    return correct


def test_base_policy_is_weak_but_not_hopeless(default_base_dir):
    task = ArithmeticDataset()
    warmup = _greedy_correct(default_base_dir, task.problems("warmup")[:24])
    test = task.problems("test")[:48]
    correct = _greedy_correct(default_base_dir, test)
    accuracy = sum(correct) / len(test)
    three_steps = [ok for problem, ok in zip(test, correct) if problem.prompt.count("Then ") == 3]
    warmup, three_steps = sum(warmup) / len(warmup), sum(three_steps) / len(three_steps)
    print(f"\nbase policy greedy: warm-up {warmup:.2f}, test {accuracy:.2f}, three-step {three_steps:.2f}")
    assert warmup >= 0.7, f"the warm-up did not take: {warmup:.2f} on its own distribution"
    assert 0.1 <= accuracy <= 0.8, f"in-distribution accuracy of the base policy {accuracy:.2f}"
    # RL needs some reward on the harder half of the training split, and room to improve there.
    assert 0.0 < three_steps <= 0.5, f"three-step accuracy of the base policy {three_steps:.2f}"
