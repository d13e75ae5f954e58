#!/bin/sh
# Builds every image the compose stack runs, with nothing from Docker Hub (`make images` runs it):
#   1. prefix-rft/debian:bookworm      Debian's own packages (debootstrap --variant=minbase), imported
#   2. prefix-rft/python:3.11-bookworm stand-in for python:3.11-slim-bookworm   (base/python.Dockerfile)
#      prefix-rft/redis:7-bookworm     stand-in for redis:7.4-alpine            (base/redis.Dockerfile)
#   3. prefix-rft:cpu                  the project's image, on the python stand-in (Dockerfile)
# Step 1 runs once (it needs root and debootstrap; --rebuild-base repeats it); steps 2 and 3 are
# ordinary cached builds, seconds when nothing changed (--no-cache: a cold build of all three,
# to measure one or to get past a broken layer; pip's downloads stay cached).
#
# Settings (environment; `make images VAR=...` passes them):
#   DEBIAN_MIRROR        Debian mirror for debootstrap and apt in the builds (http://deb.debian.org/debian)
#   CA_BUNDLE            CA file of a TLS-inspecting proxy, given to pip as a build secret
#                        (default: the one your pip uses, $PIP_CERT or `pip config get global.cert`)
#   WHEELS               a local folder of wheels (e.g. the +cpu torch) linked into deploy/docker/wheels/
#                        (default: your pip's find-links, $PIP_FIND_LINKS or its config, if a folder)
#   TORCH_CPU_INDEX_URL  index with the +cpu torch (default: PyTorch's; "" when WHEELS has it, which
#                        is the default when WHEELS holds a torch wheel)
#   PIP_INDEX_URL        a PyPI mirror; HTTP_PROXY, HTTPS_PROXY, NO_PROXY are passed on when set
#   MODELS               the host's model cache, where the built-in default model is found and
#                        copied into deploy/docker/models/ for the build ($PRFT_CACHE_DIR or
#                        ~/.cache/prefix-rft); "" for none: the build trains its own (CPU-minutes)
#   PREFIX_RFT           the project's CLI (a command, e.g. `.venv/bin/prefix-rft`), run first as
#                        `$PREFIX_RFT build-default-model --cache-dir $MODELS`: it builds the model
#                        there once, or finds it (`make images` passes the venv's when there is one)
#   IMAGE                the project's image name (prefix-rft:cpu); EXTRA (cpu) picks the engine
#   DOCKER               the docker client (docker); it must build with BuildKit (buildx, or a
#                        client older than 23 such as Debian's docker.io)
set -eu
cd "$(dirname "$0")/../.."

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=${BASE_IMAGE:-prefix-rft/debian:bookworm}
PYTHON_IMAGE=${PYTHON_IMAGE:-prefix-rft/python:3.11-bookworm}
REDIS_IMAGE=${REDIS_IMAGE:-prefix-rft/redis:7-bookworm}
IMAGE=${IMAGE:-prefix-rft:cpu}
EXTRA=${EXTRA:-cpu}
DOCKER=${DOCKER:-docker}
rebuild_base=no
no_cache=""
for arg in "$@"; do
    case "$arg" in
        --rebuild-base) rebuild_base=yes ;;
        --no-cache) rebuild_base=yes no_cache=--no-cache ;;
        *) echo "build-images: unknown argument $arg (--rebuild-base, --no-cache)" >&2; exit 2 ;;
    esac
done

say() { printf 'build-images: %s\n' "$*" >&2; }

pip_setting() {
    # $1: pip's option name (cert, find-links). The environment wins over pip's config files.
    value=$(printenv "PIP_$(echo "$1" | tr 'a-z-' 'A-Z_')" || true)
    if [ -z "$value" ] && command -v python3 >/dev/null; then
        value=$(python3 -m pip config get "global.$1" 2>/dev/null || true)
    fi
    printf '%s' "$value"
}

# A client that builds with BuildKit: with the buildx plugin, `docker build` is BuildKit; clients
# before 23.0 have BuildKit built in (DOCKER_BUILDKIT=1); newer ones without buildx have only the
# legacy builder, which cannot do the Dockerfile's mounts. Another client on PATH may do.
buildkit_client() {
    for client in "$DOCKER" $(which -a docker 2>/dev/null || true); do
        if "$client" buildx version >/dev/null 2>&1; then
            echo "$client"
            return 0
        fi
        major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
        if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then
            echo "$client"
            return 0
        fi
    done
    return 1
}
if ! client=$(buildkit_client); then
    say "no docker client here builds with BuildKit: install the buildx plugin (docker-buildx) or Debian's docker.io"
    exit 1
fi
export DOCKER_BUILDKIT=1
# shellcheck disable=SC2086 # no_cache: none or one word
build() { "$client" build $no_cache "$@"; }

# 1. The base image, from Debian's packages.
if [ "$rebuild_base" = yes ] || ! "$client" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { say "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    say "debootstrap bookworm from $DEBIAN_MIRROR into $rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$client" import --change 'CMD ["bash"]' - "$BASE_IMAGE" >&2
    rm -rf "$rootfs"
    trap - EXIT
fi

# 2. The stand-ins for the Docker Hub images.
proxy_args=""
for name in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    if printenv "$name" >/dev/null; then
        proxy_args="$proxy_args --build-arg $name"
    fi
done
for standin in python:"$PYTHON_IMAGE" redis:"$REDIS_IMAGE"; do
    # shellcheck disable=SC2086 # proxy_args: words on purpose
    build $proxy_args --build-arg BASE_IMAGE="$BASE_IMAGE" -t "${standin#*:}" \
        -f "deploy/docker/base/${standin%%:*}.Dockerfile" deploy/docker/base
done

# 3. The project's image. Secrets and wheels come from here, through arguments, never by path.
set -- --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg EXTRA="$EXTRA"
ca_bundle=${CA_BUNDLE-$(pip_setting cert)}
if [ -n "$ca_bundle" ]; then
    set -- "$@" --secret id=ca_bundle,src="$ca_bundle"
fi
wheels=${WHEELS-$(pip_setting find-links)}
has_torch=no
for folder in $wheels; do
    [ -d "$folder" ] || continue
    for wheel in "$folder"/*.whl; do
        [ -f "$wheel" ] || continue
        # Hard links when on the same file system: no copy of a 200 MB wheel.
        ln -f "$wheel" deploy/docker/wheels/ 2>/dev/null || cp -p "$wheel" deploy/docker/wheels/
        case "${wheel##*/}" in torch-*+cpu-*) has_torch=yes ;; esac
    done
done
if [ -n "${TORCH_CPU_INDEX_URL+set}" ]; then
    set -- "$@" --build-arg TORCH_CPU_INDEX_URL="$TORCH_CPU_INDEX_URL"
elif [ "$has_torch" = yes ]; then
    set -- "$@" --build-arg TORCH_CPU_INDEX_URL=
fi
if [ -n "${PIP_INDEX_URL:-}" ]; then
    set -- "$@" --build-arg PIP_INDEX_URL="$PIP_INDEX_URL"
fi

# The built-in default model: trained on this machine once, not in every cold build.
models=${MODELS-${PRFT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prefix-rft}}
if [ -n "$models" ] && [ -n "${PREFIX_RFT:-}" ]; then
    say "the default model: $PREFIX_RFT build-default-model --cache-dir $models"
    # shellcheck disable=SC2086 # PREFIX_RFT: a command, words on purpose
    $PREFIX_RFT build-default-model --cache-dir "$models" >&2
fi
rm -rf deploy/docker/models/default-*
handed_in=no
if [ -n "$models" ]; then
    for model in "$models"/default-*/; do
        [ -f "${model}config.json" ] || continue
        # -p: the same files with the same times, so an unchanged model keeps the layer cached.
        cp -Rp "${model%/}" deploy/docker/models/
        handed_in=yes
    done
fi
[ "$handed_in" = yes ] || say "no default model in '$models': the image build trains its own (CPU-minutes)"

# shellcheck disable=SC2086 # proxy_args: words on purpose
build $proxy_args "$@" -t "$IMAGE" -f deploy/docker/Dockerfile .
say "built $IMAGE on $PYTHON_IMAGE, and $REDIS_IMAGE; for compose:"
say "  export PREFIX_RFT_PYTHON_IMAGE=$PYTHON_IMAGE PREFIX_RFT_REDIS_IMAGE=$REDIS_IMAGE"
