"""The run's decisions on the Airflow side, pure (``nextstep``, ``verdict``, ``budgets``, ``ending``, ``summary``,
``options``), and the thin ledger reads and writes they stand on (``ledgerio``)."""
