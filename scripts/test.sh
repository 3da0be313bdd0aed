#!/bin/bash
# Quick start, tests: set up, lint, compile-check the FreeBSD series, run
# every test (engine, test bed, harness, series) with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check .
python3 -m pytest -q -ra "$@"
