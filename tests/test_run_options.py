"""Each run option's default and bounds are written once (josh_core/rollout/options.py): the
`josh rollout|eval|selftrain` flags, RolloutConfig, SelftrainConfig, the Ray options and the
app's Launch page all agree with it. They once drifted: beam and branching were bounded at
1024 and 64 by a run but at 64 and 16 by `josh selftrain`, max_turns at 200 and 40, and
ToolWOZ's `val` was written into `josh selftrain` as the evaluation split."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from josh_core.cli import app as josh_app
from josh_core.envs import DEFAULT_ENV, get_env, names
from josh_core.policies.factory import AGENT_STYLES, DECODING_MODES
from josh_core.rollout import RolloutConfig
from josh_core.rollout.options import RUN_OPTIONS, SELFTRAIN_DEFAULTS
from josh_core.train.selftrain import SelftrainConfig

ROOT = Path(__file__).resolve().parent.parent
# Parameters that hold a run option under another name.
ALIASES = {"max_actions": "max_actions_per_turn", "base": "agent", "eval_max_turns": "max_turns",
           "ray_address": "ray"}  # fmt: skip


def _bounds(info) -> tuple:
    """A pydantic field's ge and le."""
    ge = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
    le = next((m.le for m in info.metadata if getattr(m, "le", None) is not None), None)
    return ge, le


def _params(command: str) -> dict:
    return {p.name: p for p in typer.main.get_command(josh_app).commands[command].params}


@pytest.mark.parametrize("command", ["rollout", "eval", "selftrain"])
def test_the_cli_flags_take_their_defaults_and_bounds_from_the_run_options(command):
    params = _params(command)
    checked = 0
    for name, param in params.items():
        option = RUN_OPTIONS.get(ALIASES.get(name, name))
        if option is None:
            continue
        checked += 1
        expected = SELFTRAIN_DEFAULTS.get(name, option.default) if command == "selftrain" else option.default
        assert param.default == expected, (command, name)
        if name not in ALIASES:
            assert option.cli_flag in param.opts, (command, name)
        # The flag states the option's range and checks none of its own (the configuration
        # checks, naming every flag out of range at once).
        assert (param.min, param.max) in ((None, None), (option.ge, option.le)), (command, name)
        if option.ge is not None and option.show_range:
            stated = "[" + option.help_text().rsplit("[", 1)[1]
            assert param.help.replace("\\", "").endswith(stated), (command, name)
    assert checked >= 10


def test_the_configurations_take_their_defaults_and_bounds_from_the_run_options():
    for name, info in RolloutConfig.model_fields.items():
        option = RUN_OPTIONS.get(name)
        if option is None:
            assert name in ("constrained", "grounded"), f"{name}: a run setting that is no run option"
            continue
        assert info.default == option.default, name
        assert _bounds(info) == (option.ge, option.le), name
    shared = 0
    for name, info in SelftrainConfig.model_fields.items():
        option = RUN_OPTIONS.get(ALIASES.get(name, name))
        if option is None:
            continue
        shared += 1
        assert info.default == SELFTRAIN_DEFAULTS.get(name, option.default), name
        assert _bounds(info) == (option.ge, option.le), name
    assert shared >= 12


def test_selftrain_flags_and_settings_agree_on_what_is_not_a_run_option_too():
    settings = SelftrainConfig.model_fields
    renamed = {"kind": "kinds", "filter_": "filter", "ray": "ray_address"}
    for name, param in _params("selftrain").items():
        field = settings.get(renamed.get(name, name))
        if field is None or name in ("kind",):
            continue
        assert param.default == field.get_default(call_default_factory=True), name


def test_an_environment_decides_the_defaults_that_are_its_own():
    assert RUN_OPTIONS["env"].default == DEFAULT_ENV
    toolwoz = SelftrainConfig()
    assert (toolwoz.env, toolwoz.user, toolwoz.train_split, toolwoz.eval_split) == (DEFAULT_ENV, "agenda", "train", "val")
    assert get_env("toolwoz").heldout_split == "val"
    retail = SelftrainConfig(env="tau2-retail")
    environment = get_env("tau2-retail")
    assert (retail.user, retail.eval_split) == (environment.default_user, environment.eval_split)
    assert RUN_OPTIONS["env"].choices() == names()


def test_out_of_range_settings_are_refused_with_the_run_options_bounds():
    from pydantic import ValidationError

    from josh_core.distributed.ray_rollout import RayOptions

    for config in (RolloutConfig, SelftrainConfig):
        with pytest.raises(ValidationError, match="beam"):
            config(beam=RUN_OPTIONS["beam"].le + 1)
        config(beam=RUN_OPTIONS["beam"].le, branching=RUN_OPTIONS["branching"].le)  # the bound itself is fine
        with pytest.raises(ValidationError, match="max_turns"):
            config(max_turns=RUN_OPTIONS["max_turns"].le + 1)
    with pytest.raises(ValueError, match="--ray-workers: at least 1"):
        RayOptions(workers=0)


@pytest.mark.slow
def test_the_launch_page_form_takes_its_widgets_from_the_run_options(tmp_path):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.query_params["db"] = str(tmp_path / "launch.duckdb")
    app.run()
    app.switch_page("app_pages/launch.py")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    safe = 2**53 - 1
    numbers = {w.label: w for w in app.number_input}
    shown = 0
    for option in RUN_OPTIONS.values():
        if option.label in numbers:
            shown += 1
            widget = numbers[option.label]
            assert widget.value == option.first_value, option.name
            clip = (lambda v: None if v is None else max(-safe, min(safe, v)))
            assert (widget.min, widget.max) == (clip(option.ge), clip(option.le)), option.name
    assert shown == 9  # limit, beam, branching, max_turns, seed, concurrency, temperature, max_actions, ray_workers
    selects = {w.label: w for w in app.selectbox}
    assert selects["Agent style"].options == list(AGENT_STYLES) and selects["Agent style"].value == "auto"
    assert selects["Decoding"].options == list(DECODING_MODES) and selects["Decoding"].value == "auto"
    assert selects["Environment"].value == DEFAULT_ENV
    assert selects["Scoring"].options == list(get_env(DEFAULT_ENV).scoring_modes)
    assert next(t for t in app.text_input if t.label == "Agent SPEC").value == RUN_OPTIONS["agent"].default
    assert next(t for t in app.toggle if t.label == "JOSH beam search").value is RUN_OPTIONS["josh"].first_value
