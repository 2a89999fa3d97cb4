"""Tooling around the domain library: the local stack and its supervisor, the embedded
PostgreSQL, the Airflow REST client, the ``shipping`` command, the demo and the benchmark.

Nothing in :mod:`shipping` proper imports from here; modules here import the domain and
a few shared helpers (:mod:`~shipping.ops.state`, :mod:`~shipping.ops.samples`,
:mod:`~shipping.ops.render`), never each other's entry points.
"""
