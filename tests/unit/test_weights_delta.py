"""Delta versions: bit-exact for bf16 and fp32, much smaller than the full version when few weights
change, and refused (so the full version is fetched) when the base or the delta is not the right one."""

import pytest
import torch
from safetensors.torch import save_file

from shared.weights.delta import apply_delta, encode_delta
from shared.weights.manifest import BucketMismatch, build_manifest, load_state_dict


def _versions(tmp_path):
    generator = torch.Generator().manual_seed(1)
    base = {"a": torch.randn(256, 256, generator=generator).to(torch.bfloat16),
            "b": torch.randn(128, 64, generator=generator)}
    new = {name: tensor.clone() for name, tensor in base.items()}
    # An RL step's update: about 2% of the weights move, by a little.
    for tensor in new.values():
        flat = tensor.view(-1)
        chosen = torch.randperm(flat.numel(), generator=generator)[: flat.numel() // 50]
        flat[chosen] += (1e-3 * torch.randn(chosen.numel(), generator=generator)).to(tensor.dtype)
    save_file(base, tmp_path / "base.safetensors")
    save_file(new, tmp_path / "new.safetensors")
    return new, (tmp_path / "base.safetensors").read_bytes(), (tmp_path / "new.safetensors").read_bytes()


def test_a_delta_rebuilds_the_new_version_bit_for_bit(tmp_path):
    new, base_bytes, new_bytes = _versions(tmp_path)
    manifest = build_manifest(tmp_path / "new.safetensors", 8, 16 << 10)
    spec, data = encode_delta(base_bytes, new_bytes, 7, 8)
    assert spec.delta_bytes < len(new_bytes) / 5  # few weights changed: a fraction of the bytes
    rebuilt = apply_delta(base_bytes, spec, data, manifest)
    assert bytes(rebuilt) == new_bytes
    state = load_state_dict(manifest, rebuilt)
    for name, tensor in new.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name


def test_a_wrong_base_or_a_corrupt_delta_is_refused(tmp_path):
    _, base_bytes, new_bytes = _versions(tmp_path)
    manifest = build_manifest(tmp_path / "new.safetensors", 8, 16 << 10)
    spec, data = encode_delta(base_bytes, new_bytes, 7, 8)
    wrong_base = bytearray(base_bytes)
    wrong_base[-1] ^= 0xFF  # a worker on another version: the checksums catch it
    with pytest.raises(BucketMismatch, match="hash mismatch"):
        apply_delta(wrong_base, spec, data, manifest)
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 1
    with pytest.raises(BucketMismatch, match="corrupt"):
        apply_delta(base_bytes, spec, bytes(corrupt), manifest)
    other = manifest.model_copy(update={"version": 9})
    with pytest.raises(BucketMismatch, match="cannot make v9"):
        apply_delta(base_bytes, spec, data, other)
    with pytest.raises(ValueError, match="one layout"):
        encode_delta(base_bytes, new_bytes + b"x", 7, 8)
