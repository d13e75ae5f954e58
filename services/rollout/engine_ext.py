"""Methods added to vLLM's worker (``worker_extension_cls``); they run in the engine-core process.

On CPU the linear weights are pre-packed for the kernels, so ``model.load_weights`` on the live model
fails; ``model_runner.reload_weights`` re-runs the loader's post-processing and is the supported path.
Tensors are read here, in the worker, so no weights cross the RPC pipe: from local safetensors files (a
user's checkpoint), or from the shared-memory segment the rollout process assembled a received version
in (``shared_weights``), as views of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from safetensors import safe_open

from services.rollout.shared_weights import attached, tensors


def _tensors(paths: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    for path in paths:
        with safe_open(path, framework="pt", device="cpu") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def _refresh_tied_output_layer(model: torch.nn.Module) -> None:
    """With tied embeddings the checkpoint has no ``lm_head.weight``, so the reload leaves the output
    layer alone; but on CPU it computes with its own pre-packed copy of the embedding matrix, built
    when the model was loaded. Rebuild it from the (shared, now new) weight, or logits use old weights."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    weight = getattr(head, "weight", None)
    method = getattr(head, "quant_method", None)
    if weight is None or embed is None or method is None:
        return
    if weight.data_ptr() == embed.weight.data_ptr():
        method.process_weights_after_loading(head)


class WeightSwapExtension:
    def prft_reload_weights(self, paths: list[str]) -> None:
        self.model_runner.reload_weights(weights_iterator=_tensors(paths))  # type: ignore[attr-defined]
        _refresh_tied_output_layer(self.model_runner.get_model())  # type: ignore[attr-defined]

    def prft_reload_shared_weights(self, name: str) -> None:
        """Load the version in shared-memory segment ``name`` (its creator frees it afterwards)."""
        with attached(name) as buffer:
            self.model_runner.reload_weights(weights_iterator=tensors(buffer))  # type: ignore[attr-defined]
        _refresh_tied_output_layer(self.model_runner.get_model())  # type: ignore[attr-defined]

    def prft_weights_checksum(self) -> float:
        """A cheap fingerprint of the served weights (tests and debugging)."""
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        return float(sum(p.detach().double().sum().item() for p in model.parameters()))
