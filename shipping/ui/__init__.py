"""The ledger view: each order's ledger, served inside Airflow's API server (see app.py).

Airflow-free: :mod:`shipping.airflow_plugin` wires it into Airflow (its authentication,
its metadata database, the pipeline's connections).
"""
