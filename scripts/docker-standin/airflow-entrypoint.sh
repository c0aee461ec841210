#!/usr/bin/env bash
# The official image's entrypoint semantics that compose stacks rely on (a subset): `bash ...`, `python ...`
# and `airflow ...` run as given; anything else is an airflow subcommand (`scheduler` runs `airflow scheduler`).
set -euo pipefail
if [[ $# -eq 0 ]]; then
  exec /bin/bash
fi
case "$1" in
  bash) shift; exec /bin/bash "$@" ;;
  python) shift; exec python "$@" ;;
  airflow) shift; exec airflow "$@" ;;
  *) exec airflow "$@" ;;
esac
