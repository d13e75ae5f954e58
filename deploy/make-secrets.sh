#!/bin/sh
# Writes fresh random secrets for docker compose and for the Kubernetes base, once: files that
# already exist are kept (pass --force to replace them). Run from anywhere:
#   deploy/make-secrets.sh [--force]
# Compose (deploy/compose/secrets/, mounted under /run/secrets/):
#   prft_token       bearer token for weight pushes (PRFT_AUTH__TOKEN)
#   redis_url        the services' Redis URL with the password (PRFT_REDIS__URL)
#   redis_users.acl  redis-server's ACL file: the password, and a password-less user that may
#                    only PING, for the health check
# Kubernetes (deploy/k8s/base/secret.env, turned into the Secret "prefix-rft-secrets"):
#   auth-token, redis-password, redis-url (point redis-url elsewhere for an external Redis)
# The s3 weight transport's store (SeaweedFS) and its two keys: the learner's may write, the
# workers' may only read. Each set of files is written when missing, so running this again after
# an update adds them beside secrets made before:
#   compose (compose.s3.yaml):   s3_identities.json (the store's key list),
#                                s3_learner_credentials, s3_worker_credentials (AWS credentials files)
#   Kubernetes (components/weights-s3, the Secret "prefix-rft-s3"): s3.env (learner-access-key,
#                                learner-secret-key, worker-access-key, worker-secret-key), s3-identities.json
set -eu
here=$(cd "$(dirname "$0")" && pwd)
force=no
[ "${1:-}" = --force ] && force=yes

random_hex() {
    # $1 bytes (default 32), as hex: the values go into a URL, an ACL file and JSON without escaping.
    od -An -N"${1:-32}" -tx1 /dev/urandom | tr -d ' \n'
}

token=$(random_hex)
password=$(random_hex)
# S3 keys in AWS's lengths: a 20-character key id, a 40-character secret.
learner_key=$(random_hex 10)
learner_secret=$(random_hex 20)
worker_key=$(random_hex 10)
worker_secret=$(random_hex 20)
umask 077

s3_identities() {
    # SeaweedFS's -s3.config: who may do what. The learner uploads, lists and deletes versions; the
    # workers read buckets of them.
    printf '{"identities": [\n'
    printf '  {"name": "learner", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Read", "Write", "List"]},\n' \
        "$learner_key" "$learner_secret"
    printf '  {"name": "worker", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Read"]}\n' \
        "$worker_key" "$worker_secret"
    printf ']}\n'
}

aws_credentials() {
    # An AWS shared credentials file (AWS_SHARED_CREDENTIALS_FILE): boto3 reads the keys from it.
    printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$1" "$2"
}

compose="$here/compose/secrets"
if [ "$force" = yes ] || [ ! -f "$compose/prft_token" ]; then
    mkdir -p "$compose"
    chmod 700 "$compose"
    printf '%s\n' "$token" >"$compose/prft_token"
    printf 'redis://:%s@redis:6379/0\n' "$password" >"$compose/redis_url"
    printf 'user default on >%s ~* &* +@all\nuser healthcheck on nopass -@all +ping\n' "$password" \
        >"$compose/redis_users.acl"
    # Read inside the containers by their own users (prft, redis): the folder above stays private.
    chmod 644 "$compose/prft_token" "$compose/redis_url" "$compose/redis_users.acl"
    echo "wrote $compose/{prft_token,redis_url,redis_users.acl}"
else
    echo "kept $compose (exists; --force replaces it)"
fi

if [ "$force" = yes ] || [ ! -f "$compose/s3_identities.json" ]; then
    mkdir -p "$compose"
    chmod 700 "$compose"
    s3_identities >"$compose/s3_identities.json"
    aws_credentials "$learner_key" "$learner_secret" >"$compose/s3_learner_credentials"
    aws_credentials "$worker_key" "$worker_secret" >"$compose/s3_worker_credentials"
    chmod 644 "$compose/s3_identities.json" "$compose/s3_learner_credentials" "$compose/s3_worker_credentials"
    echo "wrote $compose/{s3_identities.json,s3_learner_credentials,s3_worker_credentials}"
else
    echo "kept $compose/s3_* (exist; --force replaces them)"
fi

k8s="$here/k8s/base/secret.env"
if [ "$force" = yes ] || [ ! -f "$k8s" ]; then
    printf 'auth-token=%s\nredis-password=%s\nredis-url=redis://:%s@redis:6379/0\n' "$token" "$password" "$password" >"$k8s"
    echo "wrote $k8s"
else
    echo "kept $k8s (exists; --force replaces it)"
fi

s3k8s="$here/k8s/components/weights-s3"
if [ "$force" = yes ] || [ ! -f "$s3k8s/s3.env" ]; then
    printf 'learner-access-key=%s\nlearner-secret-key=%s\nworker-access-key=%s\nworker-secret-key=%s\n' \
        "$learner_key" "$learner_secret" "$worker_key" "$worker_secret" >"$s3k8s/s3.env"
    s3_identities >"$s3k8s/s3-identities.json"
    echo "wrote $s3k8s/{s3.env,s3-identities.json}"
else
    echo "kept $s3k8s/s3.env (exists; --force replaces it)"
fi
