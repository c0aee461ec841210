"""``python -m airflow_grid_resume.agent``: run one spot session of a run."""

import sys

from airflow_grid_resume.agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
