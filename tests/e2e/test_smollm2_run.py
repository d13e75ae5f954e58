"""End to end on a real pre-trained checkpoint: ``prefix-rft run`` trains SmolLM2-135M-Instruct
(converted from its GGUF file) on a local data file with every process real, leaves ``final/``, and
``export`` writes a folder that transformers loads and generates with and that ``eval`` serves in a
fresh rollout worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from launcher.eval_report import EvalSummary
from shared.modeling import check_model_folder

pytestmark = pytest.mark.integration

# Few steps of small batches with short answers: enough to train, publish, export and serve.
SMALL_JOB = """
learner:
  batch_prompts: 2
  mini_batch_prompts: 2
  micro_batch: 8
  checkpoint_every: 2
  algorithm: {n_rollouts: 4}
  sampling: {temperature: 1.0, max_tokens: 24}
rollout:
  max_model_len: 1024  # not SmolLM2's 8192: vLLM's start-up profiles a batch of this many tokens
eval: {k: 0, max_tokens: 32}  # greedy, short: SmolLM2 writes 192 tokens of prose in over 30 s on 2 cores
"""


def _prefix_rft(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *args]


def _data_file(path: Path) -> Path:
    rows = [
        {"problem": f"What is {a} + {b}?", "answer": str(a + b),
         "solution": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."}
        for a, b in [(2, 3), (4, 4), (7, 1), (5, 6), (9, 3), (8, 8), (6, 7), (3, 9), (12, 5), (10, 10)]
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_run_export_and_eval_on_smollm2(tmp_path, smollm2_dir):
    data = _data_file(tmp_path / "sums.jsonl")
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_JOB)
    run = tmp_path / "run"
    args = ["run", "--model", str(smollm2_dir), "--data", str(data), "--steps", "2", "--eval-problems", "2",
            "--eval-every", "0", "--config", str(config), "--out", str(run)]
    done = subprocess.run(_prefix_rft(*args), capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert report["steps"] == 2 and report["trained_groups"] >= 2 * 2

    # The run leaves its final weights as a complete folder; they are trained, not the base's.
    check_model_folder(run / "final")
    final = load_file(run / "final" / "model.safetensors")
    base = load_file(smollm2_dir / "model.safetensors")
    assert set(final) == set(base)
    assert any(not torch.equal(final[name], base[name]) for name in base)

    out = tmp_path / "exported"
    done = subprocess.run(_prefix_rft("export", str(run), str(out)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_file(out / "model.safetensors").keys() == final.keys()

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(smollm2_dir).chat_template
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    # A fresh rollout worker serves the export (eval starts one, with the reward service).
    results = tmp_path / "eval"
    done = subprocess.run(
        _prefix_rft("eval", str(data), "--model", str(out), "--problems", "2", "--k", "0",
                    "--max-tokens", "32", "--config", str(config), "--out", str(results)),
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = EvalSummary.model_validate_json((results / "summary.json").read_text())
    assert Path(summary.model).resolve() == out.resolve() and [r.n_problems for r in summary.benchmarks] == [2]
    assert 0.0 <= summary.benchmarks[0].greedy_accuracy <= 1.0
    samples = (results / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2  # one greedy response per problem (k = 0)
