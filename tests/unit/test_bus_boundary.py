"""Only shared/bus talks to Redis: no stream, hash, set or key command on a Redis client anywhere else in the
code (shared/, services/, launcher/, benchmarks/), and no module outside the bus imports redis-py, so what
is in Redis and who writes it is answered by one package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("shared", "services", "launcher", "benchmarks")
BUS = Path("shared/bus")

# redis-py's methods for stream, hash and set commands, transactions and scripts, called as methods.
_COMMAND = re.compile(
    r"\.("
    r"x(?:add|readgroup|read|autoclaim|claim|ack|pending|pending_range|range|revrange|len|del|trim|setid"
    r"|info_\w+|group_\w+)"
    r"|h(?:set|setnx|get|getall|del|exists|incrby|incrbyfloat|keys|vals|len|mset|mget|scan|scan_iter|randfield)"
    r"|s(?:add|rem|ismember|mismember|members|card|scan|scan_iter|pop|randmember|move|inter|union|diff)"
    r"|scan_iter|pipeline|register_script|evalsha|transaction"
    r")\("
)
# get/set/delete/... are also methods of dicts, events, metrics and HTTP clients: they count when their
# first argument is a key of the job (a Keys attribute or a string built from the namespace).
_KEY_COMMAND = re.compile(
    r"\.(?:get|set|getset|getdel|delete|exists|expire|incr|incrby|decr|type|ttl|rename)\(\s*"
    r"(?:[\w.]*\bkeys\.\w+|Keys\(|f?[\"'][^\"']*namespace)"
)
# In a module that can hold a Redis client (it imports the bus or redis-py), a get/set/... on a name that
# ends in "client" with a key in a variable counts as well.
_CLIENT_COMMAND = re.compile(
    r"\b\w*client\.(?:get|set|getset|getdel|delete|exists|expire|incr|incrby|decr|type|ttl|rename)\(\s*(?!f?[\"'])"
)
_HOLDS_CLIENT = re.compile(r"^\s*(?:import redis\b|from redis\b|from shared\.bus\b|import shared\.bus\b)", re.M)
_IMPORT = re.compile(r"^\s*(?:import redis\b|from redis\b)", re.M)
# Starts a private redis-server and waits for its PING; it sends no command on a job's keys.
IMPORT_ALLOWED = {Path("launcher/processes.py")}


def violations(source: str) -> list[str]:
    """The lines of ``source`` that send a Redis stream, hash, set or key command."""
    patterns = [_COMMAND, _KEY_COMMAND] + ([_CLIENT_COMMAND] if _HOLDS_CLIENT.search(source) else [])
    return [
        f"{number}: {line.strip()}"
        for number, line in enumerate(source.splitlines(), 1)
        if any(pattern.search(line) for pattern in patterns)
    ]


def _modules() -> list[Path]:
    found = [path.relative_to(ROOT) for top in SCANNED for path in (ROOT / top).rglob("*.py")]
    assert len(found) > 50, "the scan found too few modules: is ROOT right?"
    return [path for path in found if BUS not in path.parents]


def test_no_redis_command_outside_the_bus():
    offenders = {str(path): hits for path in _modules() if (hits := violations((ROOT / path).read_text()))}
    assert not offenders, f"Redis commands outside shared/bus (add a method to the bus instead): {offenders}"


def test_only_the_bus_imports_redis():
    offenders = [
        str(path)
        for path in _modules()
        if path not in IMPORT_ALLOWED and _IMPORT.search((ROOT / path).read_text())
    ]
    assert not offenders, f"modules outside shared/bus import redis-py (use shared.bus): {offenders}"


def test_the_bus_itself_is_found_by_the_scan():
    """The scan would see the commands if they left the bus: the bus's own modules are full of them."""
    assert violations((ROOT / BUS / "tasks.py").read_text())
    assert violations((ROOT / BUS / "weights.py").read_text())


@pytest.mark.parametrize(
    "line",
    [
        "self.client.xadd(self.keys.tasks, encode(task))",
        "client.xpending_range(stream, group, '-', '+', count=10)",
        "pipe = self.client.pipeline(transaction=True)",
        "raw = self.client.hgetall(self.state_key)",
        "ids = client.smembers(keys.produced)",
        "client.xinfo_groups(stream)",
        "raw = self.client.get(self.keys.weights)",
        "redis_client.set(keys.weights, encode_value(record))",
        "client.get(Keys(ns).weights)",
        'client.delete(f"{namespace}:tasks")',
    ],
)
def test_a_redis_command_is_caught(line):
    assert violations(line)


def test_a_key_in_a_variable_is_caught_where_a_client_can_be_held():
    line = "        raw = self.client.get(self.key)\n"
    assert violations("from shared.bus import connect\n" + line)
    assert violations("import redis\n" + line)
    assert not violations("import httpx\n" + line)  # an HTTP client's get


@pytest.mark.parametrize(
    "line",
    [
        "model.eval()",
        "stop_event.set()",
        "self.metrics.version.set(version)",
        "reply = await client.get('/healthz')",
        "config.get('redis', {}).get('url')",
        "self.tasks.issue(task, self.run_id, state)",
        "record = self.records.get()",
    ],
)
def test_other_methods_of_the_same_name_are_not(line):
    assert not violations(line)
