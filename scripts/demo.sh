#!/bin/bash
# Quick start, main job: set up, bring up the two-host namespace test bed and
# live-migrate a running test guest across it, verified page by page.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
invoke testbed.up
invoke migrate --report reports/migrate.json "$@"
