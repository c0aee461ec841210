# Everything the project needs is installed by these targets from pyproject.toml and the pins in
# constraints.txt (the versions checked to work together). Only python3 (3.10+) and make are assumed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint demo agent bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,demo]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

agent: $(STAMP)
	$(VENV)/bin/grid-resume build-agent dist/grid-resume-agent.pyz

demo: $(STAMP)
	@echo "make demo: the end-to-end demo (local spot cloud + real Airflow) is NOT BUILT YET."
	@echo "It arrives with the issue 'The main job in one command'. Today: 'make test' runs the agent"
	@echo "through real interruptions against moto's server; docs/agent.md shows the agent by hand."

# Benchmarks compare against the AWS CLI, which pins its own botocore: it gets its own venv.
AWSCLI_VENV := .venv-awscli
$(AWSCLI_VENV)/bin/aws:
	$(PYTHON) -m venv $(AWSCLI_VENV)
	$(AWSCLI_VENV)/bin/pip install --quiet -r benchmarks/requirements-awscli.txt

bench: $(STAMP) $(AWSCLI_VENV)/bin/aws
	$(PY) benchmarks/agent_bench.py --aws $(AWSCLI_VENV)/bin/aws
	$(PY) benchmarks/capacity_bench.py

clean:
	rm -rf $(VENV) $(AWSCLI_VENV) dist build .pytest_cache .ruff_cache
