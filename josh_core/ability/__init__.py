"""The general-ability check (`josh ability`): did training an adapter break what the model
could do outside ToolWOZ? Offline, with no judge model:

- verifiable instructions: our own prompts (`data/instructions.json`), each with programmatic
  checks (`checks.py`), answered with greedy decoding through the chat template; the pass rate;
- held-out text: the mean per-token negative log-likelihood of our own general English passages
  (`data/passages.json`, nothing about restaurants, hotels or trains, seen by no training).

Each agent after the first is compared with the first (the base) by a paired bootstrap over
prompts and over passages. What it can and cannot show: docs/evaluation.md.
"""

from josh_core.ability.run import AbilityReport, load_passages, load_prompts, run_ability

__all__ = ["AbilityReport", "load_passages", "load_prompts", "run_ability"]
