# Everything the project needs is installed by these targets from pyproject.toml and the pins in
# constraints.txt (the versions checked to work together). Only python3 (3.10+) and make are assumed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-stack lint demo agent bench clean system-deps chaos chaos-real docker-test

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,demo,examples]'
	touch $(STAMP)

# Debian packages the tests need (scripts/system-packages.txt).
system-deps:
	scripts/install-system-packages.sh

# The suite mostly waits on subprocesses and servers (about 0.6 of a core on one worker), so it runs on two xdist
# workers, one whole file per worker at a time: module fixtures such as the spot cloud stay within their file, and
# every server a test starts takes a free port. make test WORKERS=0 runs it in this process.
WORKERS ?= 2
# What runs on the instance's own python3 (3.9+, docs/agent.md): vermin fails on any newer construct.
PY39_CODE := airflow_grid_resume/__init__.py airflow_grid_resume/agent airflow_grid_resume/ledger airflow_grid_resume/ec2/bootpy.py
VERMIN = $(VENV)/bin/vermin -q -t=3.9- --no-tips --eval-annotations --violations $(PY39_CODE)

test: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) scripts/check_imports.py
	$(PY) -m mypy
	$(VERMIN)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile -m "not airflow_stack"

# The tests that start a whole Airflow as subprocesses (marker airflow_stack): the CeleryExecutor with Redis and remote
# logging, HA triggerers on PostgreSQL, the seeded kills, Assets and deadline alerts, the browser on the UI plugin.
# About 6 minutes on two workers; .ci/run runs them after make test.
test-stack: $(STAMP) system-deps
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile -m airflow_stack

# The seeded simulation of the whole lifecycle under every fault (tests/system/test_chaos.py): make test runs a fixed
# set of seeds; make chaos SEEDS=N runs seeds 1..N (about a minute each).
SEEDS ?= 20
chaos: $(STAMP) system-deps
	GRID_CHAOS_SEEDS="$$(seq -s ' ' 1 $(SEEDS))" $(PY) -m pytest -q tests/system/test_chaos.py -k seed

# The same seeded schedules on the real scheduler, triggerer and metadata DB (tests/system/test_real_airflow.py), with
# the seeds' kills of the worker, the triggerer and the scheduler: make test-stack runs one seed; make chaos-real SEEDS=N
# runs seeds 1..N (about 3 minutes each).
chaos-real: $(STAMP) system-deps
	GRID_CHAOS_REAL_SEEDS="$$(seq -s ' ' 1 $(SEEDS))" $(PY) -m pytest -q tests/system/test_real_airflow.py -k seed

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) scripts/check_imports.py
	$(VERMIN)
	$(PY) -m ruff format --check .
	$(PY) -m mypy

agent: $(STAMP)
	$(VENV)/bin/grid-resume build-agent dist/grid-resume-agent.pyz

# The whole lifecycle on the local spot cloud with a real Airflow (about 2-3 minutes; exits 0 only if it worked).
# make demo KEEP=1 leaves Airflow running afterwards and prints the UI address.
demo: $(STAMP)
	$(VENV)/bin/grid-resume demo $(if $(KEEP),--keep-running,)

# docker/Dockerfile and docker/compose.yaml for real, with no image registry: stand-ins for the official images from
# Debian packages, the compose stack up, the demo DAG through an interruption and a triggerer kill, all torn down
# (a few minutes once the images' layers are cached; the first run builds them: 10-15 min on a busy 2-core machine).
# Starts dockerd if none runs, and stops it afterwards.
docker-test: $(STAMP) system-deps
	scripts/docker-test.sh

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
	$(PY) benchmarks/deadline_bench.py --starts 200

clean:
	rm -rf $(VENV) $(AWSCLI_VENV) dist build .pytest_cache .ruff_cache
