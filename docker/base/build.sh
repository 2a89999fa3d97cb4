#!/bin/sh
# Builds the three base images of the compose stack locally, for an engine that cannot
# pull the official ones (no registry reachable): Debian bookworm from its mirror with
# debootstrap, imported with `docker import`, gives Python 3.11; Debian's postgresql and
# redis-server packages on that base stand in for the official postgres and redis images
# (same entrypoint contract, see docker/base/*/entrypoint.sh). Needs root, debootstrap and
# a running Docker engine. An image that exists already is kept (REBUILD=1 rebuilds).
#
# The tags are those docs/docker-compose.md names for SHIPPING_PYTHON_IMAGE,
# SHIPPING_POSTGRES_IMAGE and SHIPPING_REDIS_IMAGE.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
python_image=${SHIPPING_PYTHON_IMAGE:-shipping-base/python:3.11-bookworm}
postgres_image=${SHIPPING_POSTGRES_IMAGE:-shipping-base/postgres:15-bookworm}
redis_image=${SHIPPING_REDIS_IMAGE:-shipping-base/redis:7.0-bookworm}

have() { [ "${REBUILD:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

for tool in docker debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "error: $tool not found; install it (Debian as root: apt-get install -y docker.io debootstrap)" >&2
        exit 1
    }
done

if have "$python_image"; then
    echo "base $python_image: present"
else
    echo "base $python_image: debootstrap of Debian bookworm from $mirror"
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    # python3-venv brings ensurepip, with which the Dockerfile installs uv.
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
        tail -20 "$rootfs.log" >&2; echo "error: debootstrap failed (log above)" >&2; exit 1
    }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$python_image"
    rm -rf "$rootfs"
    trap - EXIT
fi

for service in postgres redis; do
    eval "image=\$${service}_image"
    if have "$image"; then
        echo "base $image: present"
    else
        echo "base $image: Debian's package on $python_image"
        docker build --quiet --build-arg "BASE_IMAGE=$python_image" --tag "$image" \
            "$here/$service" >/dev/null
    fi
done
