#!/usr/bin/env bash
# The main job on a fresh machine: set up, fetch data and the embedded model, play a few JOSH
# trees (embedded SmolLM2 agent in the compact style vs the agenda user) into josh.duckdb, then
# open the app on them. Three trees of three agent turns by default (the beam grows 2 -> 4 -> 8),
# played together so their leaves share batches: minutes on a CPU. JOSH_TREES and JOSH_MAX_TURNS
# change that (JOSH_MAX_TURNS=15 is the paper's depth).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/josh data prepare
TREES="${JOSH_TREES:-3}"
.venv/bin/josh rollout --josh --split train --limit "$TREES" --concurrency "$TREES" \
  --max-turns "${JOSH_MAX_TURNS:-3}" --db josh.duckdb
if [ "${JOSH_NO_UI:-0}" != "1" ]; then
  exec .venv/bin/josh ui --db josh.duckdb
fi
