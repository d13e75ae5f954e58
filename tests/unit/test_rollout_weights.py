"""Weight sources: URIs, safetensors headers, and the shape check done before any swap."""

import asyncio

import pytest
import torch
from safetensors.torch import save_file

from services.rollout.weights import (
    WeightsError,
    check_compatible,
    fetch,
    local_path,
    read_header,
    read_headers,
    safetensors_files,
)


def write(path, **tensors):
    save_file({k: v for k, v in tensors.items()}, str(path))
    return path


def test_header_lists_names_dtypes_and_shapes(tmp_path):
    path = write(tmp_path / "w.safetensors", a=torch.zeros(2, 3), b=torch.zeros(4, dtype=torch.bfloat16))
    assert read_header(path) == {"a": ("F32", (2, 3)), "b": ("BF16", (4,))}


def test_a_file_cut_short_is_refused_before_any_swap(tmp_path):
    # A copy or a download that stopped half-way: the header is whole, the tensors are not.
    whole = write(tmp_path / "whole.safetensors", a=torch.zeros(64, 64)).read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole[:-100])
    with pytest.raises(WeightsError, match="not a safetensors file"):
        read_header(cut)


def test_files_of_a_directory_or_a_file(tmp_path):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    write(shard_dir / "model-00002.safetensors", b=torch.zeros(1))
    write(shard_dir / "model-00001.safetensors", a=torch.zeros(1))
    assert [p.name for p in safetensors_files(shard_dir)] == ["model-00001.safetensors", "model-00002.safetensors"]
    assert set(read_headers(safetensors_files(shard_dir))) == {"a", "b"}
    write(shard_dir / "model.safetensors", c=torch.zeros(1))
    assert [p.name for p in safetensors_files(shard_dir)] == ["model.safetensors"]
    with pytest.raises(WeightsError, match="does not exist"):
        safetensors_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no .safetensors"):
        safetensors_files(tmp_path / "empty")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(WeightsError, match="not a safetensors file"):
        read_header(tmp_path / "junk.safetensors")


def test_compatibility_needs_the_same_names_and_shapes():
    reference = {"w": ("F32", (4, 4)), "b": ("F32", (4,))}
    check_compatible(reference, {"w": ("BF16", (4, 4)), "b": ("F32", (4,))})  # dtype may differ
    check_compatible(reference, {**reference, "lm_head.weight": ("F32", (8, 4))})  # tied output layer
    with pytest.raises(WeightsError, match="missing 1"):
        check_compatible(reference, {"w": ("F32", (4, 4))})
    with pytest.raises(WeightsError, match="does not have"):
        check_compatible(reference, {**reference, "extra": ("F32", (1,))})
    with pytest.raises(WeightsError, match="wrong shapes"):
        check_compatible(reference, {"w": ("F32", (4, 5)), "b": ("F32", (4,))})


def test_uris():
    assert str(local_path("file:///a/b%20c/model.safetensors")) == "/a/b c/model.safetensors"
    assert str(local_path("file://localhost/x")) == "/x"
    assert local_path("http://host/v1/weights/3") is None
    with pytest.raises(WeightsError, match="remote host"):
        local_path("file://elsewhere/x")
    with pytest.raises(WeightsError, match="unsupported"):
        asyncio.run(fetch("s3://bucket/w", None, 1.0))


def test_fetch_of_a_file_uri_reads_in_place(tmp_path):
    path = write(tmp_path / "model.safetensors", a=torch.zeros(1))
    assert asyncio.run(fetch(tmp_path.as_uri(), tmp_path / "unused", 1.0)) == [path]
    assert not (tmp_path / "unused").exists()
