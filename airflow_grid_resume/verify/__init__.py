"""``grid-resume verify``: does a training command survive spot interruptions?

It runs the command as the agent would (real agent processes, a local moto S3, one metadata
service per session), once uninterrupted as a reference and then through seeded interruptions,
and decides from what it measured. See docs/verify.md. Nothing here imports Airflow, and this
module imports nothing so that the probe (``python -m airflow_grid_resume.verify.probe``) starts fast.
"""
