#!/bin/sh
# Runs its arguments (the image passes `prefix-rft ...`) after two translations the services
# cannot do themselves, because they read plain environment variables:
#  - Docker secrets arrive as files: PRFT_X_FILE=/run/secrets/f sets PRFT_X to the file's content
#    (trailing newline dropped) and is then removed, since an unknown PRFT_ key stops start-up.
#  - One compose service scales to N containers that each need their own address: the literal
#    {hostname} in a PRFT_ value becomes this container's host name (resolvable on the network).
set -eu

for name in $(env | sed -n 's/^\(PRFT_[A-Za-z0-9_]*\)_FILE=.*/\1/p'); do
    file=$(printenv "${name}_FILE")
    if [ ! -r "$file" ]; then
        echo "prft-entrypoint: ${name}_FILE=$file is not a readable file" >&2
        exit 2
    fi
    value=$(cat "$file")
    export "$name=$value"
    unset "${name}_FILE"
done

host=$(hostname)
for name in $(env | sed -n 's/^\(PRFT_[A-Za-z0-9_]*\)=.*{hostname}.*/\1/p'); do
    value=$(printenv "$name" | sed "s/{hostname}/$host/g")
    export "$name=$value"
done

exec "$@"
