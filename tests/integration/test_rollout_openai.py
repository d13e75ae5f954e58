"""The rollout service's OpenAI-compatible routes, as OpenAI's own Python client and lm-eval-harness use
them, checked against plain transformers forwards of the served weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.modeling import load_tokenizer, prompt_token_ids
from tests.helpers.reference import hf_greedy, hf_logprobs
from tests.helpers.rollout import MAX_N, MAX_TOKENS, TOKEN, start_rollout
from tests.helpers.workers import wait_served

pytestmark = pytest.mark.integration

MODEL = "prefix-rft"  # rollout.served_model_name's default
QUESTION = "What is 12 + 34?"


@pytest.fixture(scope="module")
def service(tmp_path_factory, default_base_dir):
    """Serves the warmed-up base policy, which answers arithmetic (so greedy answers are text, not noise)."""
    process, url = start_rollout(tmp_path_factory.mktemp("rollout-openai"), default_base_dir)
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(service):
    with openai.OpenAI(base_url=f"{service}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizer(default_base_dir):
    return load_tokenizer(default_base_dir)


def served_version(service: str) -> int:
    return httpx.get(f"{service}/v1/weights", timeout=60).json()["version"]


def wait_until_generating(service: str, timeout: float = 60.0) -> None:
    """Until the engine holds a request (the rollout_engine_unfinished_requests gauge is above 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for family in text_string_to_metric_families(httpx.get(f"{service}/metrics", timeout=60).text):
            if family.name == "rollout_engine_unfinished_requests" and family.samples[0].value > 0:
                return
        time.sleep(0.05)
    raise TimeoutError("no request reached the engine")


def assert_logprobs_match(model_dir: Path, context: list[int], tokens: list[int], logprobs: list[float], temperature):
    assert len(logprobs) == len(tokens) > 0
    table = hf_logprobs(model_dir, context, tokens, temperature)
    worst = max(abs(got - float(table[i, t])) for i, (t, got) in enumerate(zip(tokens, logprobs)))
    assert worst < 1e-3, f"log-probs differ from transformers by up to {worst:.2e}"


def test_models_lists_the_served_model(client, service, default_base_dir):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].root == str(default_base_dir)


def test_completions_give_n_samples_with_the_served_weights_log_probs(client, service, tokenizer, default_base_dir):
    reply = client.completions.with_raw_response.create(
        model=MODEL, prompt="12 + 34 =", n=2, temperature=0.8, max_tokens=12, seed=7, logprobs=2,
        extra_body={"return_token_ids": True},
    )
    completion = reply.parse()
    version = served_version(service)
    assert reply.headers["x-model-version"] == str(version) and completion.model_extra["model_version"] == version
    assert len(completion.choices) == 2 and sorted(c.index for c in completion.choices) == [0, 1]
    for choice in completion.choices:
        # A completions prompt is text as it is: no chat template.
        assert choice.prompt_token_ids == tokenizer("12 + 34 =")["input_ids"]
        assert len(choice.token_ids) <= 12
        assert_logprobs_match(
            default_base_dir, choice.prompt_token_ids, choice.token_ids, choice.logprobs.token_logprobs, 0.8
        )
        assert all(len(top) <= 2 + 1 for top in choice.logprobs.top_logprobs)  # the top 2 and the sampled one
        assert choice.text == tokenizer.decode(choice.token_ids, skip_special_tokens=True)
    # The same seed gives the same samples.
    again = client.completions.create(
        model=MODEL, prompt="12 + 34 =", n=2, temperature=0.8, max_tokens=12, seed=7
    )
    assert [c.text for c in again.choices] == [c.text for c in completion.choices]


def test_greedy_completion_is_the_transformers_argmax_and_stops_at_a_stop_string(client, tokenizer, default_base_dir):
    """Also top_p: sampling from the smallest set of tokens holding 0.1% of the mass samples the argmax."""
    prompt_ids = prompt_token_ids(tokenizer, QUESTION)  # token ids are taken as given
    greedy = client.completions.create(
        model=MODEL, prompt=prompt_ids, temperature=0.0, max_tokens=40, extra_body={"return_token_ids": True}
    ).choices[0]
    assert greedy.token_ids == hf_greedy(default_base_dir, prompt_ids, 40, tokenizer.eos_token_id)
    nucleus = client.completions.create(
        model=MODEL, prompt=prompt_ids, temperature=1.0, top_p=0.001, max_tokens=40, n=2
    )
    assert [c.text for c in nucleus.choices] == [greedy.text] * 2
    text = greedy.text
    assert len(text) > 2, text
    stop = text[len(text) // 2]
    stopped = client.completions.create(model=MODEL, prompt=prompt_ids, temperature=0.0, max_tokens=40, stop=[stop])
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_chat_completions_use_the_served_chat_template(client, service, tokenizer, default_base_dir):
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], n=2, temperature=0.7, max_tokens=24, seed=3,
        logprobs=True, top_logprobs=2, extra_body={"return_token_ids": True},
    )
    # The prompt the learner trains on: the user turn in the tokenizer's template, assistant turn open.
    context = prompt_token_ids(tokenizer, QUESTION)
    assert chat.prompt_token_ids == context
    assert chat.model_extra["model_version"] == served_version(service)
    assert len(chat.choices) == 2
    for choice in chat.choices:
        assert choice.message.role == "assistant"
        logprobs = [step.logprob for step in choice.logprobs.content]
        assert_logprobs_match(default_base_dir, context, choice.token_ids, logprobs, 0.7)
        assert all(len(step.top_logprobs) == 2 for step in choice.logprobs.content)
    # Greedy chat answers as /v1/generate answers the same question.
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], temperature=0.0, max_tokens=40
    ).choices[0].message.content
    generated = httpx.post(
        f"{service}/v1/generate", json={"prompt": QUESTION, "sampling": {"temperature": 0.0, "max_tokens": 40}},
        timeout=120,
    ).json()
    assert answer == generated["samples"][0]["text"]


@pytest.mark.parametrize(
    ("request_args", "error", "reason"),
    [
        ({"temperature": 5.0}, openai.BadRequestError, "temperature"),
        ({"top_p": 0.0}, openai.BadRequestError, "top_p"),
        ({"max_tokens": MAX_TOKENS + 1}, openai.BadRequestError, "exceeds the limit"),
        ({"n": MAX_N + 1}, openai.BadRequestError, "exceeds the limit"),
        ({"n": 2, "temperature": 0.0}, openai.BadRequestError, "greedy"),
        ({"logprobs": 1000}, openai.BadRequestError, "logprobs"),
        ({"seed": 2**70}, openai.BadRequestError, "seed"),
        ({"stream": True}, openai.BadRequestError, "stream"),
        ({"model": "another-model"}, openai.NotFoundError, "does not exist"),
        ({"prompt": "1 + " * 2000}, openai.BadRequestError, "context"),
    ],
)
def test_refused_requests_raise_the_clients_own_errors(client, request_args, error, reason):
    args = {"model": MODEL, "prompt": "1 + 1 =", "max_tokens": 4, **request_args}
    with pytest.raises(error) as refused:
        client.completions.create(**args)
    assert refused.value.status_code < 500
    assert reason in refused.value.body["message"], refused.value.body
    # The engine keeps serving.
    assert client.completions.create(model=MODEL, prompt="1 + 1 =", max_tokens=2).choices


def test_a_malformed_chat_request_is_refused_in_openais_format(service, client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages="not a list", max_tokens=4)
    assert refused.value.body["param"] == "messages"
    reply = httpx.post(
        f"{service}/v1/completions", content=b"{not json", headers={"content-type": "application/json"}, timeout=60
    )
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "BadRequestError"
    # Bodies that vLLM's protocol models refuse with their own errors, or fail on (found by fuzzing).
    for route, body in [
        ("/v1/completions", {}),
        ("/v1/completions", {"prompt": "1 + 1 =", "stop": False}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "structured_outputs": [[1]]}),
    ]:
        reply = httpx.post(f"{service}{route}", json=body, timeout=60)
        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["error"]["type"] == "BadRequestError"


LM_EVAL_MC = """\
task: prft_sums_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""

LM_EVAL_GEN = """\
task: prft_sums_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 16
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# lm-eval is its own process; importing it took most of 10 minutes on a machine shared with other engines.
@pytest.mark.timeout(1500)
def test_lm_eval_harness_evaluates_the_rollout_worker(service, client, tokenizer, default_base_dir, tmp_path):
    """lm-eval's ``local-completions`` on two local tasks, no hub: log-likelihood multiple choice (echoed
    prompt log-probs) and greedy generation; its results are checked against transformers and the client."""
    mc_docs = [
        {"question": "12 + 34 =", "choices": ["46", "47", "56"], "answer": 0},
        {"question": "5 + 7 =", "choices": ["11", "13", "12"], "answer": 2},
        {"question": "20 + 30 =", "choices": ["40", "50", "60"], "answer": 1},
    ]
    write_jsonl(tmp_path / "mc.jsonl", mc_docs)
    # The first target is the served model's own greedy answer, the second is not: exact_match is 0.5.
    questions = ["12 + 34 =", "5 + 7 ="]
    greedy = client.completions.create(model=MODEL, prompt=questions[0], temperature=0, max_tokens=16, stop=["\n"])
    gen_docs = [{"question": questions[0], "answer": greedy.choices[0].text}, {"question": questions[1], "answer": "x"}]
    write_jsonl(tmp_path / "gen.jsonl", gen_docs)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mc.yaml").write_text(LM_EVAL_MC.format(data=tmp_path / "mc.jsonl"))
    (tasks / "gen.yaml").write_text(LM_EVAL_GEN.format(data=tmp_path / "gen.jsonl"))

    model_args = (
        f"model={MODEL},base_url={service}/v1/completions,tokenizer={default_base_dir},"
        "tokenizer_backend=huggingface,num_concurrent=2,max_retries=1"
    )
    argv = [
        sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args,
        "--tasks", "prft_sums_mc,prft_sums_gen", "--include_path", str(tasks),
        "--output_path", str(tmp_path / "out"), "--log_samples",
    ]
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run(argv, env={**os.environ, **offline}, capture_output=True, text=True, timeout=1400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    (mc_file,) = (tmp_path / "out").rglob("samples_prft_sums_mc_*.jsonl")
    samples = [json.loads(line) for line in mc_file.read_text().splitlines()]
    assert len(samples) == len(mc_docs)
    correct = 0
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = mc_docs[sample["doc_id"]]
        # lm-eval's own split of context and continuation: the continuation is what the whole adds.
        context_ids = tokenizer(doc["question"])["input_ids"]
        expected = []
        for choice in doc["choices"]:
            whole = tokenizer(doc["question"] + " " + choice)["input_ids"]
            continuation = whole[len(context_ids) :]
            table = hf_logprobs(default_base_dir, context_ids, continuation)
            expected.append(sum(float(table[i, t]) for i, t in enumerate(continuation)))
        got = [float(resp[0][0]) for resp in sample["resps"]]
        assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-3, (got, expected)
        correct += max(range(len(expected)), key=expected.__getitem__) == doc["answer"]
    assert results["prft_sums_mc"]["acc,none"] == pytest.approx(correct / len(mc_docs))
    assert results["prft_sums_gen"]["exact_match,none"] == pytest.approx(0.5)


def test_a_response_comes_from_one_version_and_names_it(client, service, tokenizer, default_base_dir, default_init_dir):
    """Last in this module: it leaves the service on other weights. A push while a request runs is
    answered at once, and its swap waits for the request; the request's samples all come from the
    weights it names."""
    start = served_version(service)
    prompt_ids = prompt_token_ids(tokenizer, QUESTION)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            # As long a request as the service allows (n x max_tokens), so that it is still running when seen.
            client.completions.create, model=MODEL, prompt=prompt_ids, n=MAX_N, temperature=1.0, max_tokens=MAX_TOKENS,
            seed=5, logprobs=0, extra_body={"return_token_ids": True, "ignore_eos": True},
        )
        wait_until_generating(service)
        pushed = httpx.post(
            f"{service}/v1/weights", json={"version": start + 1, "uri": default_init_dir.as_uri()},
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300,
        )
        in_flight = running.result()
    assert pushed.status_code == 202, pushed.text
    wait_served(service, start + 1)
    assert in_flight.model_extra["model_version"] == start
    for choice in in_flight.choices:
        assert len(choice.token_ids) == MAX_TOKENS
        assert_logprobs_match(default_base_dir, prompt_ids, choice.token_ids, choice.logprobs.token_logprobs, 1.0)

    after = client.completions.with_raw_response.create(
        model=MODEL, prompt=prompt_ids, temperature=0.0, max_tokens=20, extra_body={"return_token_ids": True}
    )
    assert after.headers["x-model-version"] == str(start + 1)
    assert after.parse().model_extra["model_version"] == start + 1
    assert after.parse().choices[0].token_ids == hf_greedy(default_init_dir, prompt_ids, 20, tokenizer.eos_token_id)
