#!/bin/sh
# As the official Airflow image's entrypoint: an Airflow subcommand (`api-server`,
# `scheduler`, `celery worker`, ...) runs as `airflow <subcommand>`; a program the image
# has (bash, python, shipping, airflow, ...) runs as it is.
set -eu
case "${1:-}" in
    "" | -*) exec airflow "$@" ;;
esac
if [ "$1" != celery ] && command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec airflow "$@"
