"""A received weight version in shared memory, so the engine core (another process) loads it without a
file: the rollout process creates the segment and the verified buckets are assembled straight into it;
the engine core maps it by name and hands the model views of it (no copy until the model's own weights
take the values); the rollout process unlinks it once the swap is over, whether it worked or not.

The bytes are a safetensors file, so its header names the tensors, their dtypes and byte ranges. vLLM's
own shared-memory buffers are built the same way (``multiprocessing.shared_memory``; see
``vllm/distributed/device_communicators/shm_object_storage.py``), including how a reader attaches.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import sys
from collections.abc import Iterator
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import torch

from services.rollout.weights import Header, WeightsError
from shared.weights.manifest import TensorSpec, read_tensor_specs

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")

# safetensors' dtype names (the header's "dtype").
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def header(specs: list[TensorSpec]) -> Header:
    return {spec.name: (spec.dtype, tuple(spec.shape)) for spec in specs}


class SharedWeights:
    """One version's bytes in a shared-memory segment this process owns (``close`` frees it)."""

    def __init__(self, size: int):
        if SHM_DIR.is_dir():
            free = shutil.disk_usage(SHM_DIR).free
            # A tmpfs too small lets the segment be created, then kills the writer with SIGBUS.
            if free < size:
                raise WeightsError(
                    f"{SHM_DIR} has {free >> 20} MiB free, the weights need {size >> 20} MiB "
                    "(in a container: raise its shm size)"
                )
        self._shm = shared_memory.SharedMemory(create=True, size=size)
        self.name = self._shm.name
        self.size = size

    @property
    def buf(self) -> memoryview:
        return self._shm.buf

    def header(self) -> Header:
        """Names, dtypes and shapes from the safetensors header in memory."""
        try:
            return header(read_tensor_specs(self._shm.buf[: self.size]))
        except ValueError as exc:
            raise WeightsError(f"the received weights are not a safetensors file: {exc}") from exc

    def close(self) -> None:
        try:
            self._shm.close()
        except BufferError:  # a view is still alive somewhere: its mapping goes when it is collected
            log.warning("shared weights %s still in use; unlinked, unmapped later", self.name)
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()


@contextlib.contextmanager
def attached(name: str) -> Iterator[memoryview]:
    """The segment ``name`` mapped in this process (the engine core), unmapped on exit."""
    if sys.version_info >= (3, 13):
        shm = shared_memory.SharedMemory(name=name, track=False)
    else:
        # Before 3.13 every attach registers with the resource tracker, which unlinks the segment when
        # this process ends and warns of a "leak": the creator owns it (vLLM's readers do the same).
        register = resource_tracker.register
        resource_tracker.register = lambda *args, **kwargs: None
        try:
            shm = shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register
    try:
        yield shm.buf
    finally:
        gc.collect()  # the tensors viewing the buffer, if a reference cycle still holds one
        try:
            shm.close()
        except BufferError:
            log.warning("shared weights %s still viewed after the reload; unmapped when collected", name)


def tensors(buffer: memoryview) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of the safetensors bytes in ``buffer``, as views of it (no copy)."""
    for spec in read_tensor_specs(buffer):
        dtype = DTYPES.get(spec.dtype)
        if dtype is None:
            raise ValueError(f"tensor {spec.name}: dtype {spec.dtype} is not supported")
        count = (spec.end - spec.start) // dtype.itemsize
        if count == 0:
            yield spec.name, torch.empty(spec.shape, dtype=dtype)
            continue
        yield spec.name, torch.frombuffer(buffer, dtype=dtype, count=count, offset=spec.start).view(spec.shape)
