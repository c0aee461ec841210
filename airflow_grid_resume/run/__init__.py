"""The run's decisions on the Airflow side, pure: what a try does next (``nextstep``)."""
