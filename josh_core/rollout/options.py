"""Every run option, declared once: its default, its bounds, its help, its flag and its label.

`RolloutConfig` (config.py) takes its fields from here; so do the `josh rollout|eval` flags
(`cli/run_flags.py`), the app's Launch page, `SelftrainConfig`'s settings shared with a run
(`train/selftrain.py`) and the Ray options (`distributed/ray_rollout.py`). A default that one
of them changes on purpose is declared beside the option (`form_default`: the Launch page's
first value) or in that consumer's one override table (`SELFTRAIN_DEFAULTS`), never by writing
the value again; `tests/test_run_options.py` walks them all and compares.

Bounds are far above any useful setting (the paper: beam 8, branching 2, 15 turns) and low
enough that a typo cannot make a run that never ends or fills the memory. They are checked by
the configuration, which names every flag out of range at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from josh_core.envs import DEFAULT_ENV
from josh_core.envs import names as env_names
from josh_core.llm.specs import spec_usages
from josh_core.policies.factory import AGENT_STYLES, DECODING_MODES, DEFAULT_AGENT_SPEC

_SAME: Any = object()


@dataclass(frozen=True)
class RunOption:
    """One run option. `name` is its RolloutConfig field (or, for what a run does not store:
    decoding, trials and the Ray options, its CLI parameter)."""

    name: str
    default: Any
    help: str
    ge: float | None = None
    le: float | None = None
    flag: str | None = None  # the command-line flag; None: --name-with-dashes
    label: str | None = None  # the Launch page's label (None: not on the page)
    form_default: Any = _SAME  # the Launch page's first value, where it differs from `default`
    choices: Callable[[], Sequence[str]] | None = None  # the values it takes, where they are few
    finite: bool = False  # a float that may not be inf or nan
    show_range: bool = True  # False where the bounds are only the storage's (the seed's BIGINT)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def first_value(self) -> Any:
        """Its value when the Launch page first shows it."""
        return self.default if self.form_default is _SAME else self.form_default

    def field(self, default: Any = _SAME, **kwargs: Any) -> Any:
        """The pydantic field of a configuration that holds this option (a consumer's own
        default only where it is declared as an override)."""
        if self.finite:
            kwargs["allow_inf_nan"] = False
        return Field(self.default if default is _SAME else default, ge=self.ge, le=self.le,
                     description=self.help, **kwargs)  # fmt: skip

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of this option's range, naming its flag (None: it is not). For the
        options no configuration holds (trials, the Ray options)."""
        if value is None:
            return None
        if (self.ge is not None and value < self.ge) or (self.le is not None and value > self.le):
            return f"{self.cli_flag}: {self.help_text().rsplit('[', 1)[-1].rstrip(']')} (got {value})"
        return None

    def help_text(self, help: str | None = None) -> str:
        """The help (or a command's own wording of it), with the values or the range it takes."""
        text = help or self.help
        if self.choices is not None:
            text += f" One of: {', '.join(self.choices())}."
        if not self.show_range:
            pass
        elif self.ge is not None and self.le is not None:
            text += f" [{_number(self.ge)} to {_number(self.le)}]"
        elif self.ge is not None:
            text += f" [at least {_number(self.ge)}]"
        return text


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _decodings() -> Sequence[str]:
    return list(DECODING_MODES)


def _styles() -> Sequence[str]:
    return list(AGENT_STYLES)


_OPTIONS = [
    RunOption("josh", False, "JOSH beam search (else plain rollouts).", label="JOSH beam search", form_default=True),
    RunOption("env", DEFAULT_ENV, "Environment (`josh envs`).", label="Environment", choices=env_names),
    RunOption("scoring", None, "Reward semantics, among the environment's (ToolWOZ: toolwoz, ours, the default | "
              "reference, the original ToolWOZ code's, to compare with the paper's numbers; docs/toolwoz.md).",
              label="Scoring"),
    RunOption("split", None, "Scenario split of the environment (default: its JOSH split with --josh, else its "
              "evaluation split; `josh envs`).", label="Split"),
    RunOption("limit", None, "Only the first N scenarios.", ge=1, label="Scenarios", form_default=1),
    RunOption("scenario_file", None, "A scenario JSON file (one or a list) instead of a split."),
    RunOption("agent", DEFAULT_AGENT_SPEC, "Agent SPEC: " + ", ".join(spec_usages()) + ", oracle or script:FILE.",
              label="Agent SPEC"),
    RunOption("user", None, "User simulator SPEC (default: the environment's; ToolWOZ agenda, τ² llm:embedded).",
              label="User SPEC"),
    RunOption("style", "auto", "Agent style: auto (compact for the embedded model, react otherwise).",
              label="Agent style", choices=_styles),
    RunOption("temperature", None, "Agent sampling temperature (default: the model's).", ge=0.0, le=5.0,
              label="Temperature", finite=True),
    RunOption("max_actions_per_turn", None, "Cap on agent actions per turn (default: 5 for react/fc, 3 for "
              "compact).", ge=1, le=64, flag="--max-actions", label="Max actions per turn"),
    RunOption("base_url", None, "OpenAI-compatible endpoint (else OPENAI_BASE_URL; credentials in it are not "
              "stored).", label="Base URL (openai:)"),
    RunOption("decoding", "auto", "Agent actions: auto (grounded for local models, free for API models) | "
              "grounded (action grammar, free-text values from the conversation) | grammar (action grammar "
              "only) | free (unconstrained text).", label="Decoding", choices=_decodings),
    RunOption("beam", 8, "JOSH max beam.", ge=1, le=1024, label="Max beam"),
    RunOption("branching", 2, "JOSH branching factor.", ge=1, le=64, label="Branching"),
    RunOption("max_turns", 15, "Max agent turns per conversation.", ge=1, le=200, label="Max turns"),
    RunOption("seed", 0, "Run seed.", ge=-(2**63), le=2**63 - 1, label="Seed", show_range=False),  # a BIGINT
    RunOption("concurrency", 1, "Conversations played at the same time.", ge=1, le=512,
              label="Conversations at once"),
    RunOption("trials", 1, "Play each task this many times (τ²: Pass^k up to k = trials).", ge=1, le=64),
    # Where a run is played, not what it plays: not stored with it (a resume may play elsewhere).
    RunOption("ray", None, "Play the conversations on Ray workers (the ray extra): bare --ray starts Ray here (or "
              "joins RAY_ADDRESS); auto: this machine's cluster; HOST:PORT: a cluster's head. This process "
              "writes the database. See docs/distributed.md.", label="Ray cluster (optional)", form_default=""),
    RunOption("ray_workers", None, "Ray workers (default: one per GPU for in-process models, else one per "
              "--ray-endpoints URL, else one per CPU of the cluster); each plays --concurrency conversations "
              "at a time.", ge=1, label="Ray workers"),
    RunOption("ray_endpoints", None, "Comma-separated OpenAI-compatible base URLs (e.g. several vllm serve); "
              "worker i uses URL i mod n."),
]
RUN_OPTIONS: dict[str, RunOption] = {option.name: option for option in _OPTIONS}

# The run options whose defaults self-training changes (SelftrainConfig, `josh selftrain`):
# its JOSH trees are shallow and many (max_turns: the JOSH depth), its evaluations are plain
# rollouts of their own cap (`eval_max_turns`, bounded as max_turns), and its conversations
# are played several at a time so that their leaves batch together.
SELFTRAIN_DEFAULTS: dict[str, Any] = {"max_turns": 5, "eval_max_turns": 10, "concurrency": 4}


def run_option(name: str) -> RunOption:
    return RUN_OPTIONS[name]


def flag_of(name: str) -> str:
    """The command-line flag of a run option (or of a RolloutConfig field)."""
    option = RUN_OPTIONS.get(name)
    return option.cli_flag if option else "--" + name.replace("_", "-")
