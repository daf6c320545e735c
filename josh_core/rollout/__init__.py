"""Play an environment's scenarios as plain or JOSH rollouts into a database, with resume.

`start_run` records a run (its configuration and every scenario it will play, so that it can
be resumed from the database alone) and plays the scenarios; `resume_run` continues a run:
finished conversations are kept, any other one is restarted cleanly (the nodes an
interrupted attempt left are deleted first). The CLI (`josh rollout`) and the app both call
these; an observer reports progress.

Every conversation's search seed is derived from the run seed and the scenario id, and every
node's from that and its path, so a resumed run produces the same trees as an uninterrupted
one.

What a run survives:
- One broken conversation fails alone (its error, secrets redacted, is stored); the run goes on.
- A database lock held by another process past `JOSH_DB_LOCK_TIMEOUT` costs the conversation an
  attempt: it is replayed from its start up to `JOSH_DB_BUSY_RETRIES` times (default 2), then
  fails alone. Recording a failure is retried the same way and never ends the run.
- A dead endpoint: after `JOSH_MAX_CONNECTION_FAILURES` (default 3; 0: never) conversations in a
  row (across the run) failed to connect, no further conversation is started; the run is marked
  `stopped` and resumes where it stopped. Each call to an endpoint is bounded in time
  (openai_backend: `JOSH_LLM_TIMEOUT`, `JOSH_LLM_CALL_TIMEOUT`), and an endpoint that failed
  every retry is tried once per later call, so a dead server costs minutes, not hours.
- A full disk (ENOSPC): the database cannot be written, so nothing more is played; the run
  stops (`stopped` when that can still be written) and the conversations it was playing are
  left as they were: `--resume` replays them once space is freed.
- SIGINT / SIGTERM: the run and its conversations in flight are marked `interrupted`
  (`RunInterrupted` is raised for SIGTERM, KeyboardInterrupt for SIGINT); resume replays them.
- Credentials in a base URL are not stored with the run's configuration; a resume gets the URL
  again (`base_url=`).

The package, by job: `config.py` (RolloutConfig, building the policies and environments),
`conversation.py` (playing one conversation), `faults.py` (interrupts, retries, what stops a
run), `results.py` (results and the observer), `player.py` (the `Player` seam: `LocalPlayer`
here, `distributed.ray_rollout.RayPlayer` on Ray workers), `run.py` (recording and resuming
runs). Everything is importable from `josh_core.rollout`.
"""


from __future__ import annotations

from josh_core.rollout.config import (
    MAX_ACTIONS_PER_TURN,
    MAX_BEAM,
    MAX_BRANCHING,
    MAX_CONCURRENCY,
    MAX_TEMPERATURE,
    MAX_TURNS,
    SEED_RANGE,
    EnvFactory,
    PolicyError,
    RolloutConfig,
    build_policies,
    environment_factory,
)
from josh_core.rollout.conversation import (
    PreparedConversation,
    agent_prompt_messages,
    conversation_outcome,
    play_conversation,
    prepare_conversation,
)
from josh_core.rollout.faults import (
    RunGuard,
    RunInterrupted,
    busy_retries,
    is_connection_failure,
    is_storage_failure,
    max_connection_failures,
    record_failure,
    retry_busy,
    run_interruptibly,
)
from josh_core.rollout.player import LocalPlayer, Player, PlayerFactory
from josh_core.rollout.results import ConversationResult, RolloutObserver, RunResult
from josh_core.rollout.run import code_revision, resume_run, start_run

__all__ = [
    "MAX_ACTIONS_PER_TURN", "MAX_BEAM", "MAX_BRANCHING", "MAX_CONCURRENCY", "MAX_TEMPERATURE", "MAX_TURNS",
    "SEED_RANGE", "ConversationResult", "EnvFactory", "LocalPlayer", "Player", "PlayerFactory", "PolicyError",
    "PreparedConversation", "RolloutConfig", "RolloutObserver", "RunGuard", "RunInterrupted", "RunResult",
    "agent_prompt_messages", "build_policies", "busy_retries", "code_revision", "conversation_outcome",
    "environment_factory", "is_connection_failure", "is_storage_failure", "max_connection_failures",
    "play_conversation", "prepare_conversation", "record_failure", "resume_run", "retry_busy",
    "run_interruptibly", "start_run",
]  # fmt: skip
