# A stand-in for redis:7.4-alpine, made from Debian's own packages (redis-server 7.0, with ACL
# files and AOF as compose.yaml uses them), for machines that cannot pull from Docker Hub.
ARG BASE_IMAGE=prefix-rft/debian:bookworm
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis /data
# A volume mounted at /data starts owned by redis, as in the Hub image. The user is the one the
# package creates: its uid is whatever Debian gave it (DL3066).
WORKDIR /data
# hadolint ignore=DL3066
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
