"""`make demo`: the whole auto-resume lifecycle on the local spot cloud with a real Airflow."""
