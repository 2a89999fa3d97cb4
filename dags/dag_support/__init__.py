"""What the project's DAG files share: task defaults, the retry policy and connections.

Not a DAG file itself (``.airflowignore`` keeps the DAG processor out of this folder); the
DAG files import it, since Airflow puts the DAG folder on ``sys.path``.
"""
