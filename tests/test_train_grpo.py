"""GRPO online (`josh train --kind grpo`, josh_core/train/grpo.py): the policy being trained
plays its episodes through the project's player, every episode is stored and tagged, the
rewards reach the loss, and a stopped training resumes.

Episodes are played in a toy registered environment (grpo_fixtures) by a tiny random Llama
(train_fixtures.tiny_model) with the compact agent and its grammar, so a step takes seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grpo_fixtures import APIS, use_toy_environment, user_script
from hardening_fixtures import invoke
from josh_core.storage import reads, trainings
from josh_core.storage.db import Database
from josh_core.train import train
from josh_core.train.grpo_trainer import group_advantages
from josh_core.train.online import RewardWeights, correct_format, generation_samples, shaped_reward, training_runs
from train_fixtures import tiny_model

# These train a (tiny) model through the in-process backend: the full tier only.
pytestmark = pytest.mark.slow

TOY = {"env": "toy-online", "style": "compact", "max_turns": 1, "num_generations": 4,
       "per_device_train_batch_size": 2, "goal_reward": 0.0, "format_reward": 0.0, "checkpoint_minutes": None}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny-grpo"))


@pytest.fixture(autouse=True)
def toy_environment():
    environment = use_toy_environment("book_hotel")
    yield environment
    use_toy_environment("book_hotel")


def test_the_episode_settings_are_the_run_options():
    """How an episode is played is set with the run options' defaults, bounds and help
    (rollout/options.py), as `josh rollout` and `josh selftrain` are."""
    import dataclasses

    from josh_core.rollout.options import RUN_OPTIONS, SELFTRAIN_DEFAULTS
    from josh_core.train import GRPOTrainConfig, TrainingConfigError, build_config

    fields = {f.name: f for f in dataclasses.fields(GRPOTrainConfig)}
    for name in ("env", "user", "scoring", "style", "decoding", "temperature", "max_actions_per_turn"):
        assert fields[name].default == RUN_OPTIONS[name].default, name
        assert fields[name].metadata["help"].startswith(RUN_OPTIONS[name].help), name
    assert fields["max_turns"].default == SELFTRAIN_DEFAULTS["max_turns"]
    with pytest.raises(TrainingConfigError, match="max_turns"):
        build_config("grpo", None, {"max_turns": RUN_OPTIONS["max_turns"].le + 1})
    with pytest.raises(TrainingConfigError, match="temperature"):
        build_config("grpo", None, {"temperature": 9.0})


# -- advantages and rewards -------------------------------------------------------------------------


def test_advantages_are_relative_to_the_group():
    # Two scenarios x three members, member-major: scenario 0 at positions 0, 2, 4; scenario 1 at 1, 3, 5.
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    adv = group_advantages(rewards, 3, "none")
    assert adv[0::2] == pytest.approx([1 / 3, -2 / 3, 1 / 3])  # scenario 0: 1, 0, 1 minus their mean
    assert adv[1::2] == [0.0, 0.0, 0.0]  # scenario 1 scored 0 everywhere: nothing to learn
    scaled = group_advantages(rewards, 3, "group")  # divided by the group's std (0.577)
    assert scaled[0] == pytest.approx((1 / 3) / (0.5773502691896258 + 1e-4))
    # A failed episode (None) is left out of its group and gets no advantage.
    assert group_advantages([1.0, None, 0.0, 0.5], 2, "none") == pytest.approx([0.5, 0.0, -0.5, 0.0])


def test_group_advantages_pair_the_members_of_a_scenario():
    # Scenario 0's members got 1 and 0, scenario 1's both 0.5: only scenario 0 learns.
    adv = group_advantages([1.0, 0.5, 0.0, 0.5], 2, "none")
    assert adv == pytest.approx([0.5, 0.0, -0.5, 0.0])


def test_the_papers_format_shaping_reads_the_generations():
    from engine_fixtures import ToyEnv, call, speak, user
    from josh_core.policies.script import ScriptAgent
    from josh_core.search.engine import JoshSearch, SearchConfig
    import asyncio

    env = ToyEnv([("book_hotel", {}), ("search_other", {})], apis=APIS)
    # Turn 1: a format error, then a goal call in format, then SPEAK. Turn 2: the other goal
    # made without a PLAN (parsed, so compact's format, not ReACT's), then SPEAK.
    agent = ScriptAgent([[["no command here", call("book_hotel"), speak("Booked.")]],
                         [['APICALL {"name": "search_other", "parameters": {}} <COMMAND_END>', speak("Done.")]]])
    search = JoshSearch(agent, user(), env, config=SearchConfig.plain(max_depth=2, seed=0), conversation_id="c")
    asyncio.run(search.run_to_end())
    tree = search.tree
    assert tree.reward == pytest.approx(1.0)
    weights = RewardWeights(env=1.0, goal=1.0, format=0.1)
    react = shaped_reward(tree, tree.reward, "react", weights)
    assert (react.goals, react.formatted) == (1, 3)  # the PLAN-less call is not the paper's format
    assert react.total == pytest.approx(1.0 + 1 + 0.3)
    compact = shaped_reward(tree, tree.reward, "compact", weights)
    assert (compact.goals, compact.formatted) == (2, 4)
    assert shaped_reward(tree, tree.reward, "compact", RewardWeights(env=0.0, goal=0.0, format=0.0)).total == 0.0
    assert not correct_format("react", tree.agent_nodes()[0].generations[0])


def test_samples_are_exactly_what_the_agent_sent(tmp_path):
    """Every generation's sample holds the messages of the request the agent made for it."""
    from model_fixtures import ScriptedBackend
    from josh_core.policies.agents import build_model_agent
    from josh_core.policies.factory import AgentOptions
    from josh_core.rollout import RolloutConfig
    from josh_core.train.online import EpisodePlayer
    from engine_fixtures import call, speak

    replies = ["gibberish", call("book_hotel"), speak("Booked it."), speak("Anything else?")]
    backend = ScriptedBackend(replies)
    agent = build_model_agent(backend, AgentOptions(style="react", constrained=False))
    config = RolloutConfig(env="toy-online", agent="hf:x", user=user_script(tmp_path), style="react", max_turns=2,
                           constrained=False)
    db = Database(tmp_path / "e.duckdb")
    from josh_core.policies.factory import build_user

    player = EpisodePlayer(db, config, agent, build_user(config.user), training_id="t-1", kind="grpo",
                           weights=RewardWeights())
    scenario = use_toy_environment().load_split("train", 1)
    run_id, [episode] = player.play(scenario, 1, step=3, micro=0, seed=7)
    assert episode.status == "done" and episode.reward.env == 1.0
    assert [s.prompt for s in episode.samples] == [r.messages for r in backend.requests]
    assert [s.text for s in episode.samples] == replies[: len(episode.samples)]
    run = reads.get_run(db, run_id)
    assert run.config["training"]["id"] == "t-1" and run.config["training"]["step"] == 3
    assert training_runs(db, "t-1") == [{"run_id": run_id, "step": 3, "micro": 0, "group_size": 1, "status": "done"}]


def test_one_sequence_per_episode_scores_exactly_what_one_sequence_per_generation_does(tiny):
    """The loss packs an episode into one sequence when every generation's context is a prefix
    of the next; left padding, positions and the kept logits must give the same log-probs."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from josh_core.train.grpo_trainer import GRPOLoop

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    fake = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(tiny), temperature=0.7)
    full = torch.randint(10, 1000, (40,)).tolist()
    samples = [(full[:15], 5), (full[:31], 6), (full, 4)]  # (prompt + completion, completion length)
    packed = [(full, sorted({p for ids, n in samples for p in range(len(ids) - n, len(ids))}), 1.0)]
    separate = [(ids, list(range(len(ids) - n, len(ids))), 1.0) for ids, n in samples]

    def logps(rows):
        input_ids, attention, keep, mask = GRPOLoop._pack(fake, rows, "cpu")
        with torch.no_grad():
            values = GRPOLoop._token_logps(fake, model, input_ids, attention, keep)
        return values[mask]

    one, many = logps(packed), logps(separate)
    assert one.shape == many.shape == (15,)
    assert torch.allclose(one, many, atol=1e-5), (one - many).abs().max()


# -- the reward reaches the loss -----------------------------------------------------------------------


def action_margin(model_dir: Path, adapter: Path | None, db: Path) -> float:
    """log P(first action = APICALL book_hotel) - log P(APICALL search_other) at the opening of
    a stored episode, under the base model or with the adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from josh_core.llm.local_chat import to_template_messages
    from josh_core.policies.compact_agent import compact_action
    from josh_core.types import Message

    database = Database(db)
    conversation = reads.list_conversations(database, status="done")[0]
    tree = reads.load_tree(database, conversation.id)
    prompt = [Message.model_validate(m) for m in conversation.prompt_messages] + [tree.history(tree.roots[0])[0]]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    text = tokenizer.apply_chat_template(to_template_messages(prompt, None), tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]

    def logp(api: str) -> float:
        completion = tokenizer(compact_action(call={"name": api, "parameters": {}}), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + completion])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
        return float(torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).sum())

    return logp("book_hotel") - logp("search_other")


def grpo_run(tiny: Path, folder: Path, goal: str, **settings) -> tuple[object, float, float]:
    use_toy_environment(goal)
    overrides = {**TOY, "user": user_script(folder), "max_steps": 4, "learning_rate": 5e-2, **settings}
    result = train("grpo", None, f"hf:{tiny}", folder / "out", db=folder / "g.duckdb", overrides=overrides)
    before = action_margin(tiny, None, folder / "g.duckdb")
    after = action_margin(tiny, folder / "out", folder / "g.duckdb")
    return result, before, after


def test_rewards_for_one_action_raise_its_probability_and_the_controls_do_not(tiny, tmp_path):
    favoured, before, after = grpo_run(tiny, tmp_path / "favoured", "book_hotel")
    assert after - before > 0.1, (before, after)
    reversed_, before_r, after_r = grpo_run(tiny, tmp_path / "reversed", "search_other")
    assert after_r - before_r < -0.1, (before_r, after_r)
    # Flat rewards (no weight on anything): every advantage is 0, nothing is learned.
    flat, before_f, after_f = grpo_run(tiny, tmp_path / "flat", "book_hotel", env_reward=0.0)
    assert after_f == pytest.approx(before_f, abs=1e-6)
    flat_rows = [json.loads(line) for line in (tmp_path / "flat" / "out" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["advantage_abs"] == 0.0 for r in flat_rows if "advantage_abs" in r)
    # The favoured run's reward signal is in its log (the Training page draws rewards/*).
    rows = [json.loads(line) for line in (tmp_path / "favoured" / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("rewards/environment", 0) > 0 for r in rows)


# -- the command, the record, resume ------------------------------------------------------------------


def test_josh_train_grpo_records_rewards_the_budget_and_every_episode(tiny, tmp_path):
    db = tmp_path / "t.duckdb"
    result = invoke("train", "--kind", "grpo", "--base", f"hf:{tiny}", "--out", str(tmp_path / "out"), "--db", str(db),
                    "--env", "toy-online", "--user", user_script(tmp_path), "--style", "compact", "--max-turns", "1",
                    "--num-generations", "2", "--per-device-train-batch-size", "1", "--limit", "2", "--max-steps", "2",
                    "--format-reward", "0.5", "--json")
    assert result.exit_code == 0, result.output
    trained = json.loads(result.output.strip().splitlines()[-1])
    assert trained["kind"] == "grpo" and trained["steps"] == 2 and trained["examples"] == 2
    assert trained["data_path"] == "toy-online:train[0:2] (single-domain scenarios)"
    database = Database(db)
    row = trainings.get_training(database, trained["training_id"])
    assert row.status == "done" and row.config["format_reward"] == 0.5 and row.config["num_generations"] == 2
    steps = [m for m in row.metrics if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert all("rewards/mean" in m and "rewards/environment" in m for m in steps)
    # The compact agent's grammar writes canonical text: each episode is scored as one sequence.
    assert all(m["scored_sequences"] == m["episodes"] == 2 for m in steps)
    # Every episode is stored: one run per step, tagged with the training, two conversations each.
    runs = training_runs(database, trained["training_id"])
    assert [(r["step"], r["status"]) for r in runs] == [(1, "done"), (2, "done")]
    conversations = [c for r in runs for c in reads.list_conversations(database, run_id=r["run_id"])]
    assert len(conversations) == 4 and all(c.status == "done" for c in conversations)
    # The same scenario twice per step, with different seeds (a group).
    first = reads.list_conversations(database, run_id=runs[0]["run_id"])
    assert first[0].scenario_id == first[1].scenario_id and first[0].seed != first[1].seed
    # The budget: episodes and the agent turns (agent nodes) they sampled, as stored.
    nodes = sum(int((reads.nodes_frame(database, run_id=r["run_id"])["kind"] == "agent").sum()) for r in runs)
    assert trained["budget"]["episodes"] == 4 and trained["budget"]["agent_turns"] == nodes
    assert steps[-1]["budget/agent_turns"] == nodes
    manifest = json.loads((tmp_path / "out" / "josh_training.json").read_text())
    assert manifest["metrics"]["budget"] == trained["budget"]
    # The policy that played was the one being trained: the trained adapter loads as an agent.
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_the_agent_turn_budget_ends_the_training(tiny, tmp_path):
    result = train("grpo", None, f"hf:{tiny}", tmp_path / "out", db=tmp_path / "b.duckdb",
                   overrides={**TOY, "user": user_script(tmp_path), "max_steps": 5, "max_agent_turns": 9})
    # Each step samples 8 episodes of one turn: the budget of 9 is spent by step 2.
    assert result.steps == 2 and result.budget["agent_turns"] == 16


def test_grpo_needs_a_database_and_sane_settings(tiny, tmp_path):
    from josh_core.train import TrainingConfigError

    with pytest.raises(TrainingConfigError, match="database"):
        train("grpo", None, f"hf:{tiny}", tmp_path / "out", overrides={**TOY, "user": user_script(tmp_path)})
    with pytest.raises(TrainingConfigError, match="num_generations must be at least 2"):
        train("grpo", None, f"hf:{tiny}", tmp_path / "out", db=tmp_path / "x.duckdb",
              overrides={**TOY, "num_generations": 1})
    with pytest.raises(TrainingConfigError, match="scale_rewards"):
        train("grpo", None, f"hf:{tiny}", tmp_path / "out", db=tmp_path / "x.duckdb",
              overrides={**TOY, "scale_rewards": "sometimes"})
    with pytest.raises(TrainingConfigError, match="unknown environment"):
        train("grpo", None, f"hf:{tiny}", tmp_path / "out", db=tmp_path / "x.duckdb", overrides={"env": "nowhere"})
    assert not (tmp_path / "out").exists()
    # TRL's GRPO options are not silently dropped: the loop is not TRL's trainer.
    with pytest.raises(TrainingConfigError, match="TrainingArguments"):
        train("grpo", None, f"hf:{tiny}", tmp_path / "other", db=tmp_path / "x.duckdb",
              overrides={**TOY, "user": user_script(tmp_path), "trl_args": {"num_iterations": 2}})


class Interrupted(Exception):
    pass


def stop_after_saving(step: int):
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupted(f"stopped after saving step {step}")

    return StopAfterSave()


def test_an_interrupted_grpo_training_resumes_with_the_same_episodes(tiny, tmp_path):
    from josh_core.train.runner import run_training

    settings = {**TOY, "user": user_script(tmp_path), "max_steps": 3, "checkpoint_minutes": 0, "learning_rate": 5e-2}
    straight = train("grpo", None, f"hf:{tiny}", tmp_path / "straight", db=tmp_path / "s.duckdb", overrides=settings)
    out, db = tmp_path / "interrupted", tmp_path / "i.duckdb"
    with pytest.raises(Interrupted):
        run_training("grpo", None, f"hf:{tiny}", out, overrides=settings, db=db,
                     callbacks=[lambda: stop_after_saving(2)])
    resumed = train("grpo", None, f"hf:{tiny}", out, db=db, overrides=settings)
    assert resumed.resumed_from_step == 2 and resumed.steps == 3
    # Step 3 replays with the restored adapter and the same seeds: the same episodes and rewards.
    rows = {name: [m for m in trainings.get_training(Database(path), result.training_id).metrics if "loss" in m]
            for name, path, result in (("straight", tmp_path / "s.duckdb", straight), ("resumed", db, resumed))}
    assert [m["rewards/mean"] for m in rows["resumed"]] == [m["rewards/mean"] for m in rows["straight"]]
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-3, abs=1e-6)
    assert resumed.budget == straight.budget  # counted from the checkpoint on, not from zero
    step3 = [r for r in training_runs(Database(db), resumed.training_id) if r["step"] == 3]
    assert len(step3) == 1 and not [r for r in training_runs(Database(db), resumed.training_id) if r["step"] < 3]


# -- the same arm in josh selftrain ------------------------------------------------------------------


def test_selftrain_runs_a_grpo_arm_with_the_rounds_josh_budget(tiny, tmp_path):
    from josh_core.train.selftrain import Selftrain, SelftrainConfig, agent_turns_by_scenario

    use_toy_environment("book_hotel", scenarios=4)
    config = SelftrainConfig(
        experiment="online", env="toy-online", base=f"hf:{tiny}", user=user_script(tmp_path), kinds=["grpo"],
        train_limit=2, eval_split="train", eval_limit=2, beam=2, branching=2, max_turns=1, eval_max_turns=1,
        concurrency=4, train_overrides={"grpo": {"num_generations": 2, "learning_rate": 1e-3}},
    )
    db = tmp_path / "st.duckdb"
    result = Selftrain(config, db, tmp_path / "work").run()
    stages = {(s["round"], s["stage"]): s for s in result.stages}
    assert stages[(1, "train-grpo")]["status"] == "done" and stages[(1, "eval-grpo")]["status"] == "done"
    assert (1, "export-grpo") not in stages  # an online arm exports nothing
    trained = stages[(1, "train-grpo")]["result"]
    josh_turns = sum(agent_turns_by_scenario(Database(db), stages[(1, "rollout")]["result"]["run_id"],
                                             only_done=True).values())
    # Budget matched: at most one step past the JOSH trees' agent turns (each step samples 2 x 2 episodes).
    assert trained["budget_turns"] == josh_turns
    assert josh_turns <= trained["budget"]["agent_turns"] < josh_turns + 4
    [row] = [r for r in result.rounds if r.kind == "grpo"]
    assert row.agent_turns == trained["budget"]["agent_turns"] and row.plain_conversations == trained["budget"]["episodes"]
    assert row.metrics["conversations"] == 2
    # It played the round's JOSH scenarios (those of the rollout stage), as runs tagged with the training.
    runs = training_runs(Database(db), trained["training_id"])
    played = {c.scenario_id for r in runs for c in reads.list_conversations(Database(db), run_id=r["run_id"])}
    josh = {c.scenario_id for c in reads.list_conversations(Database(db), run_id=stages[(1, "rollout")]["result"]["run_id"])}
    assert played == josh


# -- the Training page -------------------------------------------------------------------------------


def test_the_training_page_shows_the_rewards_and_each_steps_episodes(tiny, tmp_path):
    from test_app_live_pages import open_page
    from ui_common import KEPT

    db = tmp_path / "page.duckdb"
    result = train("grpo", None, f"hf:{tiny}", tmp_path / "out", db=db,
                   overrides={**TOY, "user": user_script(tmp_path), "max_steps": 2, "num_generations": 2})
    app = open_page(db, "app_pages/training.py")
    assert len(app.get("vega_lite_chart")) >= 2, "a loss and a reward chart"
    assert any("Episodes" in h.value for h in app.subheader)
    assert any("episodes" in c.value and "agent turns" in c.value for c in app.caption)
    [table] = [d for d in app.dataframe if "scenario" in d.value.columns]
    last = training_runs(Database(db), result.training_id)[-1]["run_id"]
    assert set(table.value["run"]) == {last} and len(table.value) == 4  # step 2: 2 scenarios x 2 members
    # The launch form offers the online kind, without data to pick.
    app.radio(key=KEPT + "train-kind").set_value("grpo").run()
    assert not app.exception
    assert any(s.label == "Environment" for s in app.selectbox)
    assert any(n.label == "num generations" for n in app.number_input)


def test_the_policy_that_plays_is_the_one_trained_and_its_caches_go_with_each_update(tiny, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from josh_core.llm.hf_backend import HFBackend

    played, cleared = [], []
    use_loaded, weights_changed = HFBackend.use_loaded, HFBackend.weights_changed

    def recording_use_loaded(self, model, tokenizer):
        played.append(model)
        use_loaded(self, model, tokenizer)

    def recording_weights_changed(self):
        cleared.append(len(self.kv_store))  # entries computed by the old weights, about to go
        weights_changed(self)

    monkeypatch.setattr(HFBackend, "use_loaded", recording_use_loaded)
    monkeypatch.setattr(HFBackend, "weights_changed", recording_weights_changed)
    result = train("grpo", None, f"hf:{tiny}", tmp_path / "out", db=tmp_path / "c.duckdb",
                   overrides={**TOY, "user": user_script(tmp_path), "max_steps": 2, "gradient_accumulation_steps": 2,
                              "learning_rate": 5e-2})
    assert result.steps == 2
    # Once when the model is given to the backend, then before each optimiser step's first
    # episodes (not before every micro-batch: the weights change only at optimiser steps).
    assert len(cleared) == 1 + 2
    assert cleared[2] > 0, "the second step found the first step's cached keys/values and cleared them"
    # The model the agent played is the model whose adapter was saved.
    [model] = played
    saved = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    trained = {k: v for k, v in model.state_dict().items() if "lora_B" in k and ".default." in k}
    assert trained and any(float(v.abs().sum()) > 0 for v in trained.values())
    for name, value in trained.items():
        key = name.replace(".default", "")
        assert key in saved and bool((saved[key] == value).all()), name


def test_the_kl_term_measures_the_distance_to_the_starting_model(tiny, tmp_path):
    settings = {**TOY, "user": user_script(tmp_path), "max_steps": 2, "learning_rate": 5e-2, "beta": 0.1,
                "disable_dropout": True}
    first = train("grpo", None, f"hf:{tiny}", tmp_path / "first", db=tmp_path / "k.duckdb", overrides=settings)

    def kls(result):
        row = trainings.get_training(Database(tmp_path / "k.duckdb"), result.training_id)
        return [m["kl"] for m in row.metrics if "loss" in m]

    # A fresh adapter starts as the base (LoRA's B is zero): no distance at step 1, some after an update.
    assert kls(first)[0] == pytest.approx(0.0, abs=1e-7) and kls(first)[1] > 0
    # Continuing an adapter: the reference is a frozen copy of it (not the base), so again 0 at step 1.
    second = train("grpo", None, f"hf:{tiny}@{tmp_path / 'first'}", tmp_path / "second", db=tmp_path / "k.duckdb",
                   overrides=settings)
    assert kls(second)[0] == pytest.approx(0.0, abs=1e-7) and kls(second)[1] > 0
    config = json.loads((tmp_path / "second" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"]  # the saved adapter is the trained one alone, no "ref" copy
    assert not (tmp_path / "second" / "ref").exists()


def test_tau2_episodes_are_played_and_scored_through_the_same_interface(tmp_path):
    """τ² through the registry like ToolWOZ: the privileged oracle plays a retail task twice as a
    group; the environment's end-state reward is the episodes' reward."""
    from josh_core.envs import get_env
    from josh_core.policies.factory import build_agent, build_user
    from josh_core.rollout import RolloutConfig
    from josh_core.train.online import EpisodePlayer

    environment = get_env("tau2-retail")
    environment.ensure_prepared()
    script = tmp_path / "user.json"
    script.write_text(json.dumps({"turns": ["Hi, I need help with an order.", "Thanks, bye."]}))
    config = RolloutConfig(env="tau2-retail", agent="oracle", user=f"script:{script}", max_turns=8)
    player = EpisodePlayer(Database(tmp_path / "t.duckdb"), config, build_agent("oracle"), build_user(config.user),
                           training_id="t-2", kind="grpo", weights=RewardWeights(env=1.0, goal=0.0, format=0.0))
    run_id, episodes = player.play(environment.load_split("train", 1), 2, step=1, micro=0, seed=0)
    assert [e.status for e in episodes] == ["done", "done"]
    assert all(e.reward.env == 1.0 and e.reward.total == 1.0 and e.agent_turns > 0 for e in episodes)
    stored = reads.list_conversations(Database(tmp_path / "t.duckdb"), run_id=run_id)
    assert all(c.reward == 1.0 for c in stored) and stored[0].seed != stored[1].seed
