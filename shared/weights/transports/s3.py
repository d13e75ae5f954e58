"""``s3``: an S3-compatible object store (AWS S3, MinIO, SeaweedFS) through boto3 (the ``s3`` extra).
The learner uploads each version once, as ``s3://{bucket}/{prefix}/v{N}/model.safetensors`` (a
multipart upload, parts in parallel) and then its ``manifest.json``; a receiver reads the manifest
and fetches each bucket with a ranged GET (``receive`` runs several at once), so the store, not the
learner, serves the fleet. The ref is the ``s3://`` URI of the manifest.

Every request is signed with the standard AWS credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
or AWS's own chain: a profile, an instance or pod role); the endpoint of a store other than AWS comes
from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, the region from AWS_REGION. Nothing of these travels in
the job's files or its Redis record. A store that refuses (wrong key, no such bucket) or cannot be
reached raises ``S3Error`` saying which and what to set.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from shared.api.weights import DELTA_FILE, WEIGHTS_FILE, DeltaRef, weights_url
from shared.weights.manifest import DELTA_MANIFEST_FILE, MANIFEST_FILE, Manifest
from shared.weights.settings import S3Settings
from shared.weights.transport import VersionRef, WeightOrigin, WeightTransport, delta_base

T = TypeVar("T")

# Ranged GETs a receiver keeps open at once at most (``receive`` asks for its fetch_concurrency).
MAX_PARALLEL_READS = 32


class S3Error(OSError):
    """The object store refused a request or could not be reached; the message says which and why."""


def endpoint_from_env() -> str | None:
    """The store's endpoint as AWS's tools read it: AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region_from_env() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def make_client(endpoint_url: str | None, region: str | None, timeout_s: float, pool: int):
    """A boto3 S3 client. A store with its own endpoint (MinIO, SeaweedFS) gets path-style addresses,
    which they all serve, where AWS's virtual-hosted ones would need a DNS name per bucket."""
    config = Config(
        connect_timeout=10,
        read_timeout=timeout_s,
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=pool,
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def parse_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``."""
    parsed = urllib.parse.urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key:
        raise ValueError(f"the s3 transport takes an s3://bucket/key URI, not {uri!r}")
    return parsed.netloc, key


def _explain(exc: Exception, what: str, endpoint: str | None) -> S3Error:
    if isinstance(exc, boto3.exceptions.Boto3Error) and isinstance(exc.__context__, Exception):
        exc = exc.__context__  # an upload's failure wraps the request's
    where = endpoint or "AWS S3 (no AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL set)"
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return S3Error(f"{what}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code", "?")
        hint = ""
        if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"):
            hint = "; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        elif code in ("NoSuchBucket", "NoSuchKey", "404"):
            hint = "; the version may have been retired, or the bucket or endpoint is not the learner's"
        return S3Error(f"{what}: {where} answered {status} {code}{hint}")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return S3Error(f"{what}: cannot reach {where}; set AWS_ENDPOINT_URL_S3 to the store's URL")
    return S3Error(f"{what}: {type(exc).__name__}: {exc}")


class _Store:
    """One boto3 client and the threads its blocking calls run on."""

    def __init__(self, endpoint_url: str | None, region: str | None, timeout_s: float, threads: int):
        self.endpoint_url = endpoint_url
        self.client = make_client(endpoint_url, region, timeout_s, pool=threads)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="prft-s3")

    def call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error) as exc:
            raise _explain(exc, what, self.endpoint_url) from exc

    async def call_async(self, what: str, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.call, what, fn)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()


class S3Transport(WeightTransport):
    """A receiver: the manifest, then each bucket as a ranged GET of the version's file."""

    name = "s3"

    def __init__(self, timeout_s: float = 600.0, endpoint_url: str | None = None, region: str | None = None):
        self._store = _Store(endpoint_url or endpoint_from_env(), region or region_from_env(), timeout_s,
                             MAX_PARALLEL_READS)

    async def manifest(self, ref: str) -> Manifest:
        bucket, key = parse_uri(ref)
        body = await self._store.call_async(
            f"GET {ref}", lambda: self._store.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        )
        return Manifest.model_validate_json(body)

    async def bucket(self, ref: str, manifest: Manifest, index: int) -> bytes:
        bucket, key = parse_uri(ref)
        file_key = f"{key.rpartition('/')[0]}/{manifest.data_file}"  # the version's file, or its delta's
        span = manifest.buckets[index]
        byte_range = f"bytes={span.start}-{span.start + span.size - 1}"
        return await self._store.call_async(
            f"GET s3://{bucket}/{file_key} {byte_range}",
            lambda: self._store.client.get_object(Bucket=bucket, Key=file_key, Range=byte_range)["Body"].read(),
        )

    async def close(self) -> None:
        self._store.close()


class S3Origin(WeightOrigin):
    """The learner's side: upload each version once, delete it when the learner prunes it.

    The ref's ``uri`` stays the learner's own ``GET /v1/weights/{v}`` (served while the version is kept):
    a worker that takes no transport (an older one, or a push without a manifest) downloads the whole
    file from there as before, with the token, and needs no S3 credentials; an ``s3://`` uri would be
    refused by every reader of a WeightUpdate that knows only file:// and http(s)://."""

    name = "s3"

    def __init__(self, settings: S3Settings, public_base_url: str, timeout_s: float = 600.0):
        if settings.bucket is None:
            raise ValueError("the s3 transport needs s3.bucket")
        self.settings = settings
        self.public_base_url = public_base_url
        self._store = _Store(settings.endpoint_url or endpoint_from_env(), settings.region or region_from_env(),
                             timeout_s, settings.upload_concurrency)
        part = int(settings.part_mb * (1 << 20))
        self._transfer = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=settings.upload_concurrency,
            use_threads=True,
        )

    def folder(self, version: int) -> str:
        return f"{self.settings.prefix}/v{version}/"

    def uri(self, version: int, name: str) -> str:
        return f"s3://{self.settings.bucket}/{self.folder(version)}{name}"

    def publish(self, version: int, directory: Path) -> VersionRef:
        bucket, client = self.settings.bucket, self._store.client
        base = delta_base(directory)
        names = [WEIGHTS_FILE, MANIFEST_FILE] + ([DELTA_FILE, DELTA_MANIFEST_FILE] if base is not None else [])
        # Each file before its manifest: a receiver that finds a manifest finds the whole file.
        for name in names:
            key = self.folder(version) + name
            self._store.call(
                f"upload {self.uri(version, name)}",
                lambda name=name, key=key: client.upload_file(str(directory / name), bucket, key,
                                                              Config=self._transfer),
            )
        delta = None if base is None else DeltaRef(base_version=base, manifest=self.uri(version, DELTA_MANIFEST_FILE))
        return VersionRef(uri=weights_url(self.public_base_url, version), manifest=self.uri(version, MANIFEST_FILE),
                          delta=delta)

    def retire(self, version: int) -> None:
        bucket, client, folder = self.settings.bucket, self._store.client, self.folder(version)

        def delete() -> None:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    answer = client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    if answer.get("Errors"):
                        raise S3Error(f"delete s3://{bucket}/{folder}: {answer['Errors'][:3]}")

        self._store.call(f"delete s3://{bucket}/{folder}", delete)

    def close(self) -> None:
        self._store.close()
