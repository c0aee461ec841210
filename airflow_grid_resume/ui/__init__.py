"""The Airflow UI plugin: a run view per task instance and a fleet dashboard (see docs/ui.md)."""
