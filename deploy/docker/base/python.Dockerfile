# A stand-in for python:3.11-slim-bookworm, made from Debian's own packages, for machines that
# cannot pull from Docker Hub: `make images` builds it on the base image it imports with
# debootstrap (deploy/docker/build-images.sh). Bookworm's python3 is 3.11, as in the Hub image.
ARG BASE_IMAGE=prefix-rft/debian:bookworm
FROM ${BASE_IMAGE}
ENV LANG=C.UTF-8
# python-is-python3: the Hub image has `python`, and the project's Dockerfile calls it.
# python3-dev: the Hub image has the headers; DeepSpeed compiles its CPU comm op against them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-venv python3-pip python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
