# Everything the project needs is installed by these targets from pyproject.toml and the pins in
# constraints.txt (the versions checked to work together). Only python3 (3.10+) and make are assumed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint demo agent bench clean system-deps

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,demo]'
	touch $(STAMP)

# Debian packages the tests need (scripts/system-packages.txt).
system-deps:
	scripts/install-system-packages.sh

test: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

agent: $(STAMP)
	$(VENV)/bin/grid-resume build-agent dist/grid-resume-agent.pyz

# The whole lifecycle on the local spot cloud with a real Airflow (about 2-3 minutes; exits 0 only if it worked).
# make demo KEEP=1 leaves Airflow running afterwards and prints the UI address.
demo: $(STAMP)
	$(VENV)/bin/grid-resume demo $(if $(KEEP),--keep-running,)

# Benchmarks compare against the AWS CLI, which pins its own botocore: it gets its own venv.
AWSCLI_VENV := .venv-awscli
$(AWSCLI_VENV)/bin/aws:
	$(PYTHON) -m venv $(AWSCLI_VENV)
	$(AWSCLI_VENV)/bin/pip install --quiet -r benchmarks/requirements-awscli.txt

# make bench BASELINE=01d88dc also times that revision's agent on the 1 GiB file, in the same run.
bench: $(STAMP) $(AWSCLI_VENV)/bin/aws
	$(if $(BASELINE),rm -rf .bench/baseline && mkdir -p .bench/baseline && git archive $(BASELINE) airflow_grid_resume | tar -x -C .bench/baseline,)
	$(PY) benchmarks/agent_bench.py --aws $(AWSCLI_VENV)/bin/aws $(if $(BASELINE),--baseline .bench/baseline,)
	$(PY) benchmarks/cost_bench.py
	$(PY) benchmarks/capacity_bench.py
	$(PY) benchmarks/watch_bench.py --runs 500 --minutes 2

clean:
	rm -rf $(VENV) $(AWSCLI_VENV) dist build .pytest_cache .ruff_cache
