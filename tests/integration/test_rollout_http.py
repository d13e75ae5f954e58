"""The rollout service as a real process (``python -m services.rollout``, vLLM on CPU) over HTTP, checked
against plain transformers forwards of the same weights."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file

from launcher.processes import free_port
from shared.api.rollout import WeightsUpdateFailed
from shared.api.weights import WEIGHTS_FILE
from shared.datasets.arithmetic import ArithmeticDataset
from shared.modeling import load_tokenizer, prompt_token_ids, response_token_ids
from shared.weights.manifest import Manifest, write_manifest
from tests.helpers.reference import hf_greedy, hf_logprobs, hf_model
from tests.helpers.rollout import MAX_N, MAX_TOKENS, TOKEN, start_rollout
from tests.helpers.workers import wait_served

pytestmark = pytest.mark.integration

TIE_TOLERANCE = 1e-4  # greedy may pick either of two tokens whose log-probs differ by less than this


@pytest.fixture(scope="module")
def download_dir(tmp_path_factory) -> Path:
    """Where the service downloads the weights of an http(s) ``uri`` push (and nothing else)."""
    return tmp_path_factory.mktemp("rollout-downloads")


@pytest.fixture(scope="module")
def service(tmp_path_factory, default_init_dir, download_dir):
    tmp = tmp_path_factory.mktemp("rollout-http")
    process, url = start_rollout(tmp, default_init_dir, {"PRFT_ROLLOUT__DOWNLOAD_DIR": str(download_dir)})
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizer(default_init_dir):
    return load_tokenizer(default_init_dir)


def assert_greedy(model_dir: Path, context: list[int], sample: dict) -> None:
    """Every token is the argmax of the transformers forward of context + the tokens before it."""
    table = hf_logprobs(model_dir, context, sample["token_ids"])
    for position, token in enumerate(sample["token_ids"]):
        best = float(table[position].max())
        chosen = float(table[position, token])
        assert best - chosen <= TIE_TOLERANCE, (
            f"token {position}: engine chose {token} ({chosen:.5f}), argmax is "
            f"{int(table[position].argmax())} ({best:.5f})"
        )


def generate(client, **body) -> dict:
    reply = client.post("/v1/generate", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def long_prompt(tokenizer) -> list[int]:
    # Longer than a KV block, so a stale prefix cache after a swap would show in the output.
    return prompt_token_ids(tokenizer, "Add the numbers: " + " + ".join(str(i) for i in range(40, 120)))


def test_health_ready_and_metrics(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    generate(client, prompt_token_ids=[2, 5, 6, 3], n=2, sampling={"max_tokens": 4, "seed": 0})
    text = client.get("/metrics").text
    for name in (
        "rollout_generated_tokens_total", "rollout_requests_total", "rollout_request_seconds_bucket",
        "rollout_engine_unfinished_requests", "rollout_weights_version", "rollout_weight_swap_seconds",
    ):
        assert name in text, name
    assert 'rollout_generated_tokens_total{source="http"} ' in text


def test_prefixed_greedy_continues_after_the_prefix(client, tokenizer, default_init_dir):
    prompt = prompt_token_ids(tokenizer, "What is 12 + 34?")
    prefix = response_token_ids(tokenizer, "2+4=6, 1+3=4, so the answer is")[:-1]  # no EOS: the policy goes on
    body = generate(client, prompt_token_ids=prompt, prefix_token_ids=prefix, n=1,
                    sampling={"temperature": 0.0, "max_tokens": 24})
    assert body["prompt_token_ids"] == prompt and body["prefix_token_ids"] == prefix
    (sample,) = body["samples"]
    assert len(sample["token_ids"]) == len(sample["logprobs"]) > 0
    assert_greedy(default_init_dir, prompt + prefix, sample)
    # The continuation depends on the prefix: it is not the prompt's own greedy continuation.
    plain = generate(client, prompt_token_ids=prompt, n=1, sampling={"temperature": 0.0, "max_tokens": 24})
    assert plain["samples"][0]["token_ids"][:4] != sample["token_ids"][:4] or prefix == []


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_transformers(client, tokenizer, default_init_dir, temperature):
    prompt = prompt_token_ids(tokenizer, "What is 7 + 5?")
    prefix = response_token_ids(tokenizer, "7+5=12")[:3]
    body = generate(client, prompt_token_ids=prompt, prefix_token_ids=prefix, n=4,
                    sampling={"temperature": temperature, "max_tokens": 32, "seed": 11})
    assert len(body["samples"]) == 4
    for sample in body["samples"]:
        tokens, logprobs = sample["token_ids"], sample["logprobs"]
        assert len(logprobs) == len(tokens) > 0
        table = hf_logprobs(default_init_dir, prompt + prefix, tokens, temperature)
        expected = [float(table[i, t]) for i, t in enumerate(tokens)]
        worst = max(abs(a - b) for a, b in zip(logprobs, expected))
        assert worst < 1e-3, f"log-probs differ from transformers by up to {worst:.2e}"
        assert sample["finish_reason"] in ("stop", "length")


def test_many_seeded_samples_at_once_keep_the_engine_alive(service):
    """More prompt tokens at once than one engine step takes (64 samples x 100 tokens > 2048; shorter
    than a KV block, so the prefix cache does not share them): with chunked prefill, vLLM 0.32 on CPU
    splits a seeded prefill and its engine core dies; the service turns chunked prefill off."""

    def one(seed: int) -> dict:
        prompt = [4 + (seed * 7 + i) % 300 for i in range(100)]
        sampling = {"temperature": 1.0, "max_tokens": 4, "seed": seed}
        with httpx.Client(base_url=service, timeout=120) as c:
            return generate(c, prompt_token_ids=prompt, n=MAX_N, sampling=sampling)

    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(one, range(4)))
    assert all(len(b["samples"]) == MAX_N for b in bodies)
    with httpx.Client(base_url=service) as c:
        assert c.get("/healthz").status_code == 200


def test_text_prompt_is_a_user_turn_in_the_served_tokenizers_chat_template(client, tokenizer):
    # The same ids the learner trains on, so a text request is answered as a training prompt would be.
    body = generate(client, prompt="What is 1 + 1?", n=1, sampling={"max_tokens": 3, "seed": 1})
    assert body["prompt_token_ids"] == prompt_token_ids(tokenizer, "What is 1 + 1?")
    assert tokenizer.decode(body["prompt_token_ids"]).startswith("<|user|>What is 1 + 1?")
    raw = generate(client, prompt="What is 1 + 1?", chat_template=False, sampling={"max_tokens": 3, "seed": 1})
    assert raw["prompt_token_ids"] == tokenizer("What is 1 + 1?")["input_ids"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"prompt_token_ids": []}, "empty"),
        ({"prompt": ""}, "empty"),
        ({"prompt_token_ids": [2, 3], "prompt": "x"}, "exactly one"),
        ({"prompt_token_ids": [2, 3], "chat_template": False}, "text 'prompt' only"),
        ({"prompt_token_ids": [2, 3], "n": MAX_N + 1}, "exceeds the limit"),
        ({"prompt_token_ids": [2, 3], "n": 0}, "greater than or equal"),
        ({"prompt_token_ids": [2, 3], "sampling": {"max_tokens": MAX_TOKENS + 1}}, "exceeds the limit"),
        ({"prompt_token_ids": [2, 3], "sampling": {"temperature": -1}}, "greater than or equal"),
        ({"prompt_token_ids": [2, 3], "sampling": {"temperature": 2.5}}, "less than or equal to 2"),
        ({"prompt_token_ids": [2, 3], "sampling": {"stop": ["\n", ""]}}, "at least 1 character"),
        ({"prompt_token_ids": [2, 3], "sampling": {"seed": 2**70}}, "less than or equal to 18446744073709551615"),
        ({"prompt_token_ids": [2, 99999]}, "outside the vocabulary"),
        ({"prompt_token_ids": [2, -1]}, "outside the vocabulary"),
        ({"prompt_token_ids": [2], "prefix_token_ids": [384]}, "outside the vocabulary"),
        ({"prompt_token_ids": [5] * 1000, "prefix_token_ids": [6] * 24}, "no room"),
        ({"prompt_token_ids": [2], "surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(client, body, reason):
    reply = client.post("/v1/generate", json=body)
    assert 400 <= reply.status_code < 500, reply.text
    assert reason in reply.text
    # The engine keeps serving.
    assert generate(client, prompt_token_ids=[2, 5, 3], sampling={"max_tokens": 2})["samples"]


def test_weight_push_needs_the_token(client, default_base_dir):
    update = {"version": 7, "uri": default_base_dir.as_uri()}
    before = client.get("/v1/weights").json()["version"]
    assert client.post("/v1/weights", json=update).status_code == 401
    wrong = client.post("/v1/weights", json=update, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert client.post("/v1/weights", json=update, headers={"Authorization": "Basic x"}).status_code == 401
    assert client.get("/v1/weights").json()["version"] == before


def serve_directory(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def push(client, update: dict, accepted: str = "queued") -> None:
    """A push is answered once validated (202); the worker fetches and swaps in the background."""
    reply = client.post("/v1/weights", json=update, headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 202, reply.text
    assert reply.json() == {"version": update["version"], "outcome": accepted}


def failed(service: str, version: int) -> str:
    """The reason the service gives for not loading ``version``."""
    with pytest.raises(WeightsUpdateFailed) as failure:
        wait_served(service, version)
    return str(failure.value)


def perturbed_model(default_init_dir: Path, tmp_path: Path, name: str, change) -> Path:
    """A copy of the random-init model with ``change`` applied to its weights: a version nobody served."""
    weights = {k: v.clone() for k, v in hf_model(str(default_init_dir)).state_dict().items() if k != "lm_head.weight"}
    change(weights)
    folder = tmp_path / name
    shutil.copytree(default_init_dir, folder)
    save_file(weights, str(folder / "model.safetensors"))
    return folder


def test_weight_push_swaps_the_served_model(
    service, client, tokenizer, default_init_dir, default_base_dir, download_dir, tmp_path
):
    """Last in this module: it leaves the service on other weights."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    eos = tokenizer.eos_token_id
    prompt = long_prompt(tokenizer)
    greedy = {"temperature": 0.0, "max_tokens": 40}
    start = client.get("/v1/weights").json()["version"]

    before = generate(client, prompt_token_ids=prompt, sampling=greedy)
    assert before["model_version"] == start
    assert_greedy(default_init_dir, prompt, before["samples"][0])

    # A long request in flight when the push arrives: the push is answered at once, and the request
    # finishes on the old weights, tagged with them (the swap waits for it).
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            generate, client, prompt_token_ids=prompt, n=2, sampling={"temperature": 0.0, "max_tokens": 200}
        )
        time.sleep(0.3)
        push(client, {"version": start + 1, "uri": default_base_dir.as_uri()})
        in_flight = running.result()
    assert in_flight["model_version"] == start
    for sample in in_flight["samples"]:
        assert_greedy(default_init_dir, prompt, sample)

    status = wait_served(service, start + 1)
    assert (status.version, status.update, status.queued, status.last_failure) == (start + 1, None, None, None)
    push(client, {"version": start + 1, "uri": default_base_dir.as_uri()}, accepted="served")  # a no-op
    after = generate(client, prompt_token_ids=prompt, sampling=greedy)
    assert after["model_version"] == start + 1
    assert after["samples"][0]["token_ids"] == hf_greedy(default_base_dir, prompt, 40, eos)
    # A problem like those of its warm-up: the base policy answers it and ends with EOS.
    short = prompt_token_ids(tokenizer, ArithmeticDataset().problems("warmup")[0].prompt)
    answer = generate(client, prompt_token_ids=short, sampling={"temperature": 0.0, "max_tokens": 200})
    assert answer["samples"][0]["token_ids"] == hf_greedy(default_base_dir, short, 200, eos)
    # The warmed-up policy ends its answers: a stop on EOS keeps the EOS id as the last token.
    sampled = generate(client, prompt_token_ids=short, n=4, sampling={"temperature": 1.0, "max_tokens": 200, "seed": 0})
    stopped = [s for s in sampled["samples"] + answer["samples"] if s["finish_reason"] == "stop"]
    assert stopped, "the base policy should end some answers within 200 tokens"
    for sample in stopped:
        assert sample["token_ids"][-1] == eos and eos not in sample["token_ids"][:-1]
        assert len(sample["logprobs"]) == len(sample["token_ids"])

    # Over HTTP, from a perturbed copy of the random weights: a version nobody has served before.
    perturbed = perturbed_model(
        default_init_dir, tmp_path, "perturbed-model", lambda w: w["model.norm.weight"].mul_(1.5)
    )
    server, base = serve_directory(perturbed)
    try:
        push(client, {"version": start + 2, "uri": f"{base}/model.safetensors"})
        wait_served(service, start + 2)  # the download is over once the version is served
    finally:
        server.shutdown()
    after = generate(client, prompt_token_ids=prompt, sampling=greedy)
    assert after["model_version"] == start + 2
    assert_greedy(perturbed, prompt, after["samples"][0])

    # Refused at once without touching the engine: an older version. Accepted, then reported as failed
    # (the fetch runs in the background): weights of another shape, weights that are not there.
    stale = client.post("/v1/weights", json={"version": start + 1, "uri": default_base_dir.as_uri()}, headers=auth)
    assert stale.status_code == 409
    wrong = tmp_path / "wrong.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(3, 3)}, str(wrong))
    push(client, {"version": start + 3, "uri": wrong.as_uri()})
    assert "do not fit" in failed(service, start + 3)
    push(client, {"version": start + 3, "uri": (tmp_path / "none").as_uri()})
    assert "does not exist" in failed(service, start + 3)
    assert client.get("/v1/weights").json()["version"] == start + 2
    again = generate(client, prompt_token_ids=prompt, sampling=greedy)
    assert again["samples"][0]["token_ids"] == after["samples"][0]["token_ids"]
    assert "rollout_weight_swaps_total{outcome=\"ok\"} 2.0" in client.get("/metrics").text

    # A published version (a manifest of verified buckets) is swapped in from memory: nothing is written
    # to the download directory, and greedy output is that of transformers on the new weights.
    published = perturbed_model(
        default_init_dir, tmp_path, "published", lambda w: w["model.embed_tokens.weight"].mul_(-1.0)
    )
    manifest = write_manifest(published / WEIGHTS_FILE, start + 4, 1 << 20)
    assert len(Manifest.model_validate_json(manifest.read_text()).buckets) > 1
    untouched = download_dir.stat().st_mtime_ns
    push(client, {"version": start + 4, "uri": (published / WEIGHTS_FILE).as_uri(), "manifest": manifest.as_uri(),
                  "transport": "file"})
    status = wait_served(service, start + 4)
    assert status.version == start + 4 and status.last_failure.version == start + 3  # the last failure stays
    assert list(download_dir.iterdir()) == [] and download_dir.stat().st_mtime_ns == untouched
    fresh = generate(client, prompt_token_ids=prompt, sampling=greedy)
    assert fresh["model_version"] == start + 4
    assert fresh["samples"][0]["token_ids"] != after["samples"][0]["token_ids"]
    assert_greedy(published, prompt, fresh["samples"][0])
