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
set -eu
here=$(cd "$(dirname "$0")" && pwd)
force=no
[ "${1:-}" = --force ] && force=yes

random_hex() {
    # Hex only: the password goes into a URL and an ACL file without escaping.
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

token=$(random_hex)
password=$(random_hex)
umask 077

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

k8s="$here/k8s/base/secret.env"
if [ "$force" = yes ] || [ ! -f "$k8s" ]; then
    printf 'auth-token=%s\nredis-password=%s\nredis-url=redis://:%s@redis:6379/0\n' "$token" "$password" "$password" >"$k8s"
    echo "wrote $k8s"
else
    echo "kept $k8s (exists; --force replaces it)"
fi
