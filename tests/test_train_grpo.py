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
