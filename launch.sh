#!/usr/bin/env bash
# The one entry point of cnn_jax.
#   ./launch.sh                  set up .venv, then train experiments/default.py into runs/default-<time>
#   ./launch.sh --config=experiments/X.py --workdir=DIR [--config.a.b=v ...]   train (same command resumes)
#   ./launch.sh test [ARGS]      set up, then run the test suite (ARGS go to pytest)
#   ./launch.sh setup            only create or update .venv
#   ./launch.sh notebooks [ARGS] execute notebooks/*.ipynb into runs/notebooks/ (.ipynb + .html)
#   ./launch.sh bench [ARGS]     set up with the [bench] extra, then run benchmarks/run.py
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=.venv
PYTHON=${PYTHON:-python3}

setup() {
  local extras=$1
  local stamp="$VENV/.cnn_jax-installed"
  # The venv is rebuilt only when the pinned dependencies or the wanted extras change.
  local want
  want="$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1) $extras"
  if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
    return
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[$extras]"
  echo "$want" >> "$stamp"
}

case "${1:-}" in
  setup)
    shift; setup dev ;;
  test)
    shift; setup dev
    exec "$VENV/bin/python" -m pytest "$@" ;;
  notebooks)
    shift; setup dev
    exec "$VENV/bin/python" notebooks/execute.py "$@" ;;
  bench)
    shift; setup dev,bench
    exec "$VENV/bin/python" benchmarks/run.py "$@" ;;
  -h|--help|help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    setup dev
    exec "$VENV/bin/python" -m cnn_jax.main "$@" ;;
esac
