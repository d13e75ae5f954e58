"""Verifier plug-ins through the real reward service: a package pip-installed on its own registers a
verifier under the ``prefix_rft.verifiers`` entry points, another is named by its module:function path
in the settings; the service lists them, scores with them, and refuses names it does not have."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from launcher.processes import free_port, start_process, wait_http_ready
from shared.api.http import ServiceRefused
from shared.api.reward import RewardClient, ScoreItem
from tests.helpers.plugins import ENTRY_POINT, PATH, install_plugin

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reward_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    site = install_plugin(root)
    port = free_port()
    env = {
        "PYTHONPATH": str(site),
        "PRFT_REWARD__WORKERS": "1",
        "PRFT_REWARD__VERIFIER_PATHS": json.dumps([PATH]),
    }
    argv = [sys.executable, "-m", "services.reward", "--port", str(port)]
    process = start_process("reward", argv, root / "reward.log", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(process, f"{url}/healthz", timeout=120)
        yield url
    finally:
        process.stop()


async def _call(url: str, work):
    async with RewardClient(url) as client:
        return await work(client)


def test_the_service_lists_builtins_plugins_and_paths(reward_url):
    listing = asyncio.run(_call(reward_url, lambda c: c.verifiers()))
    by_name = {v.name: v for v in listing.verifiers}
    assert {"math", "gsm8k", "format", ENTRY_POINT, PATH} <= set(by_name)
    assert by_name[ENTRY_POINT].source == "entry point (prefix-rft-within-one)"
    assert by_name[ENTRY_POINT].target == "prefix_rft_within_one:within_one"
    assert by_name[ENTRY_POINT].description.startswith("Partial credit")
    assert by_name[PATH].source == "settings (reward.verifier_paths)"


def test_items_are_scored_by_the_verifier_they_name(reward_url):
    items = [
        ScoreItem(id="exact", response="so it is 42", reference="42", verifier=ENTRY_POINT),
        ScoreItem(id="one-off", response="so it is 41", reference="42", verifier=ENTRY_POINT),
        ScoreItem(id="far", response="so it is 7", reference="42", verifier=ENTRY_POINT),
        ScoreItem(id="path", response="abcd", reference="4", verifier=PATH),
        ScoreItem(id="math", response=r"\boxed{41}", reference="42"),  # the default verifier still applies
    ]
    results = {r.id: r for r in asyncio.run(_call(reward_url, lambda c: c.score(items)))}
    assert [results[i].reward for i in ("exact", "one-off", "far")] == [1.0, 0.5, 0.0]
    assert results["exact"].correct and not results["one-off"].correct
    assert results["path"].correct and results["path"].extracted == "4" and results["path"].detail == "length"
    assert results["math"].reward == 0.0 and results["math"].extracted == "41"


def test_an_unknown_verifier_is_refused_naming_the_known_ones(reward_url):
    item = ScoreItem(id="x", response="1", reference="1", verifier="within_two")
    with pytest.raises(ServiceRefused) as refused:
        asyncio.run(_call(reward_url, lambda c: c.score([item])))
    message = str(refused.value)
    assert "422" in message and "unknown verifier 'within_two'" in message
    assert "within_one" in message and "math" in message and PATH in message
    # A path the settings do not list is refused too: a client cannot make the service call any function.
    item = ScoreItem(id="y", response="1", reference="1", verifier="os:system")
    with pytest.raises(ServiceRefused, match="unknown verifier 'os:system'"):
        asyncio.run(_call(reward_url, lambda c: c.score([item])))


def test_a_bad_verifier_path_stops_the_service_at_start_up_naming_it(tmp_path):
    argv = [sys.executable, "-m", "services.reward", "--port", str(free_port()),
            "--set", "reward.verifier_paths=[no_such_package_xyz:check]"]
    process = start_process("reward", argv, tmp_path / "reward.log")
    assert process.popen.wait(timeout=60) == 2
    log = (tmp_path / "reward.log").read_text()
    assert "cannot import 'no_such_package_xyz'" in log and "Traceback" not in log
