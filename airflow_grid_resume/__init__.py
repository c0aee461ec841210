"""airflow-grid-resume: resumable ML training on EC2 spot capacity, driven by Apache Airflow.

This package root stays free of imports so the on-instance agent (``airflow_grid_resume.agent``)
can ship as a zipapp with nothing but the standard library and boto3.
"""

__version__ = "0.1.0"
