"""The GRPO loop (josh_core/train/grpo.py says what it computes and why it is our own): a
`transformers.Trainer` whose training step plays the step's episodes with the current weights,
then back-propagates the group-relative policy gradient over the agent's own tokens.

Being a Trainer, it gets from transformers what every other kind gets from TRL: the optimiser,
the schedule, gradient accumulation and clipping, logging to the runner's callbacks (the
`trainings` row), timed checkpoints and `resume_from_checkpoint` (which skips the scenario
batches already trained on; a redone step replays its episodes with the same seeds).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from josh_core.llm.base import ChatRequest
from josh_core.llm.local_chat import to_template_messages

log = logging.getLogger(__name__)

# Cumulative counters logged with every step ("budget/..."): what the training has sampled.
BUDGET = ("episodes", "agent_turns", "generations", "agent_tokens")


def group_advantages(rewards: list[float | None], group_size: int, scale: str) -> list[float]:
    """Advantages of a micro-batch's episodes, ordered member-major (`member * n + index`, as
    `EpisodePlayer.play` plays them): each reward minus its group's mean, divided by the group's
    (or the batch's) standard deviation plus 1e-4 (TRL's), or not divided (`scale="none"`).
    A failed episode (None) gets 0 and is left out of its group's statistics."""
    n = len(rewards) // group_size
    advantages = [0.0] * len(rewards)
    finished = [r for r in rewards if r is not None]
    batch_std = statistics.stdev(finished) if len(finished) > 1 else 0.0
    for index in range(n):
        members = [m * n + index for m in range(group_size)]
        values = [rewards[p] for p in members if rewards[p] is not None]
        if len(values) < 2:
            continue
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if scale == "group" else batch_std
        for p in members:
            if rewards[p] is None:
                continue
            advantage = rewards[p] - mean
            advantages[p] = advantage / (std + 1e-4) if scale != "none" else advantage
    return advantages


class _BudgetStop(TrainerCallback):
    """Ends the training after the step whose episodes spent the agent-turn budget."""

    def __init__(self, loop: "GRPOLoop"):
        self.loop = loop

    def on_step_end(self, args, state, control, **kwargs):
        cap = self.loop.config.max_agent_turns
        if cap is not None and self.loop.budget()["agent_turns"] >= cap:
            control.should_training_stop = True
        return control


def _collate(rows: list[dict[str, int]]) -> dict[str, list[int]]:
    return {"scenario": [row["scenario"] for row in rows]}


class GRPOLoop(Trainer):
    def __init__(self, *, model, args, tokenizer, scenarios: list[Any], player: Any, backend: Any, config: Any,
                 sampling_temperature: float | None, callbacks: list, continued_adapter: bool):
        super().__init__(model=model, args=args, train_dataset=[{"scenario": i} for i in range(len(scenarios))],
                         data_collator=_collate, processing_class=tokenizer, callbacks=callbacks)
        self.scenarios = scenarios
        self.player = player
        self.backend = backend
        self.config = config
        self.tokenizer = tokenizer
        # Log-probabilities of the distribution the agent sampled from (TRL divides by its temperature too).
        self.temperature = sampling_temperature if sampling_temperature and sampling_temperature > 0 else 1.0
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._spent: dict[str, int] | None = None
        self._played_at: int | None = None  # the optimiser step whose weights the backend's caches hold
        self._micro = (-1, 0)  # (step, micro-batch within the step)
        self.reference = self._reference(continued_adapter) if config.beta > 0 else None
        if config.disable_dropout:  # after the reference copy: its LoRA layers have dropout modules too
            for module in self.accelerator.unwrap_model(self.model).modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        self.add_callback(_BudgetStop(self))

    # -- the reference of the KL term --------------------------------------------------------------
    def _reference(self, continued: bool) -> str | None:
        """None: the base model (adapter disabled) is the reference; "ref": a frozen copy of the
        adapter being continued, made as TRL's GRPOTrainer does."""
        if not continued:
            return None
        model = self.accelerator.unwrap_model(self.model)
        model.add_adapter("ref", model.peft_config["default"])
        for name, param in model.named_parameters():
            if ".default." in name:
                ref = model.get_parameter(name.replace(".default.", ".ref."))
                ref.data.copy_(param.data)
                ref.requires_grad_(False)
        model.set_adapter("default")
        return "ref"

    @contextmanager
    def _as_reference(self, model):
        if self.reference is None:
            with model.disable_adapter():
                yield
            return
        model.set_adapter(self.reference)
        try:
            yield
        finally:
            model.set_adapter("default")

    # -- budget -------------------------------------------------------------------------------
    def budget(self) -> dict[str, int]:
        """What the training has sampled so far (a resumed training counts from its checkpoint)."""
        if self._spent is None:
            self._spent = dict.fromkeys(BUDGET, 0)
            for record in reversed(self.state.log_history):
                if "budget/episodes" in record:
                    self._spent = {k: int(record.get(f"budget/{k}", 0)) for k in BUDGET}
                    break
        return self._spent

    # -- one step -------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        step = self.state.global_step + 1
        micro = self._micro[1] + 1 if self._micro[0] == step else 0
        self._micro = (step, micro)
        scenarios = [self.scenarios[i] for i in inputs["scenario"]]
        group = self.config.num_generations

        started = time.perf_counter()
        if self._played_at != self.state.global_step:
            self.backend.weights_changed()  # the optimiser changed the weights since the caches were filled
            self._played_at = self.state.global_step
        model.eval()  # no LoRA dropout while the policy plays
        run_id, episodes = self.player.play(scenarios, group, step=step, micro=micro, seed=self.args.seed)
        played = time.perf_counter() - started

        rewards = [e.reward.total if e.status == "done" else None for e in episodes]
        advantages = group_advantages(rewards, group, self.config.scale_rewards)
        model.train()
        started = time.perf_counter()
        loss, tokens, kl = self._learn(model, episodes, advantages)
        self._record(episodes, rewards, advantages, tokens, kl, played, time.perf_counter() - started)
        log.info("step %d.%d: run %s, mean reward %.3f", step, micro, run_id,
                 statistics.fmean([r for r in rewards if r is not None] or [0.0]))
        return loss

    def _encode(self, sample) -> tuple[list[int], int]:
        """(token ids of prompt + completion, completion length): the prompt rendered exactly as
        the backend rendered it for the agent, the completion the sampled text and the
        end-of-turn token the row stopped on. Function calling: the assistant message (its tool
        calls) as the chat template renders it after the prompt."""
        tokenizer = self.tokenizer
        prompt = self.backend.render_prompt(ChatRequest(messages=sample.prompt, tools=sample.tools))
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if sample.tools is None:
            completion = tokenizer(sample.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        else:
            full = tokenizer.apply_chat_template(to_template_messages([*sample.prompt, sample.message], sample.tools),
                                                 tokenize=False)
            rest = full[len(prompt):] if full.startswith(prompt) else sample.text
            completion = tokenizer(rest, add_special_tokens=False)["input_ids"]
            if tokenizer.eos_token_id in completion:
                completion = completion[: completion.index(tokenizer.eos_token_id) + 1]
        limit = self.config.max_length
        if limit is not None and len(prompt_ids) + len(completion) > limit:
            # The prompt is cut from the left (its end is what the generation continues); a
            # completion longer than the limit keeps its head and one token of context.
            completion = completion[: limit - 1]
            prompt_ids = prompt_ids[len(prompt_ids) - (limit - len(completion)):]
            self._metrics["truncated_generations"].append(1.0)
        return prompt_ids + completion, len(completion)

    def _rows(self, episode, advantage: float) -> list[tuple[list[int], list[int], float]]:
        """The scored sequences of one episode: (token ids, the positions of its scored tokens,
        advantage). Consecutive generations whose prompt + completion is, token for token, the
        start of the next one's are one sequence, each generation's tokens scored where they
        stand: the same log-probabilities (attention is causal) for one forward pass instead of
        one per generation. A generation the agent's history does not keep as sampled (the
        history holds an action's canonical text: a space the grammar let the model leave out)
        ends a sequence; the next one starts a new one."""
        rows: list[tuple[list[int], list[int], float]] = []
        ids: list[int] = []
        scored: list[int] = []
        for sample in episode.samples:
            sample_ids, completion = self._encode(sample)
            if ids and sample_ids[: len(ids)] != ids:
                rows.append((ids, scored, advantage))
                scored = []
            ids = sample_ids
            scored += range(len(ids) - completion, len(ids))
        if ids:
            rows.append((ids, scored, advantage))
        return rows

    def _learn(self, model, episodes, advantages) -> tuple[torch.Tensor, int, float | None]:
        """Back-propagate the micro-batch's loss chunk by chunk; (the loss divided by the
        accumulation steps, as Trainer expects, the agent tokens, the mean KL or None)."""
        rows = [row for episode, advantage in zip(episodes, advantages) for row in self._rows(episode, advantage)]
        self._metrics["step/scored_sequences"].append(len(rows))
        tokens = sum(len(scored) for _, scored, _ in rows)
        device = self.accelerator.device
        total = torch.zeros((), device=device)
        if not tokens:
            return total, 0, None
        beta = self.config.beta
        # Rows with nothing to learn (advantage 0, no KL term) count in the normaliser, as in
        # TRL, but need no forward pass.
        work = sorted((r for r in rows if r[2] != 0.0 or beta > 0), key=lambda r: len(r[0]))
        scale = 1.0 / (tokens * self.current_gradient_accumulation_steps)
        kl_sum, kl_tokens = 0.0, 0
        size = self.config.logprob_batch_size
        for start in range(0, len(work), size):
            chunk = work[start:start + size]
            input_ids, attention, keep, mask = self._pack(chunk, device)
            advantage = torch.tensor([r[2] for r in chunk], device=device, dtype=torch.float32)[:, None]
            with self.compute_loss_context_manager():
                logps = self._token_logps(model, input_ids, attention, keep)
                per_token = -advantage * torch.exp(logps - logps.detach())
                if beta > 0:
                    with torch.no_grad(), self._as_reference(self.accelerator.unwrap_model(model)):
                        reference = self._token_logps(model, input_ids, attention, keep)
                    delta = reference - logps
                    kl = torch.exp(delta) - delta - 1
                    per_token = per_token + beta * kl
                    kl_sum += float(torch.where(mask, kl.detach(), torch.zeros_like(kl)).sum())
                    kl_tokens += int(mask.sum())
                # `where`, not a product: an unscored position's value may be NaN, and NaN x 0 is NaN.
                loss = torch.where(mask, per_token, torch.zeros_like(per_token)).sum() * scale
            self.accelerator.backward(loss)
            total = total + loss.detach()
        return total, tokens, (kl_sum / kl_tokens if kl_tokens else None)

    def _pack(self, chunk, device):
        """Rows left-padded to one width; `keep`: the positions whose logits predict a scored
        token of some row (only those go through the LM head: the vocabulary is the biggest
        tensor); `mask`: which of them score a token of each row."""
        width = max(len(r[0]) for r in chunk)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for i, (ids, positions, _) in enumerate(chunk):
            offset = width - len(ids)
            input_ids[i, offset:] = torch.tensor(ids)
            attention[i, offset:] = 1
            scored[i, [offset + p for p in positions]] = True
        keep = torch.nonzero(scored.any(dim=0)).squeeze(-1) - 1  # the position before each scored token
        mask = scored[:, keep + 1]
        return input_ids.to(device), attention.to(device), keep.to(device), mask.to(device)

    def _token_logps(self, model, input_ids, attention, keep: torch.Tensor) -> torch.Tensor:
        """Log-probabilities under `model` of the tokens right after the positions `keep`."""
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=False,
                    logits_to_keep=keep)
        logits = out.logits.float() / self.temperature
        targets = input_ids[:, keep + 1]
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    # -- logging ----------------------------------------------------------------------------------
    def _record(self, episodes, rewards, advantages, tokens: int, kl: float | None, played: float, learned: float):
        done = [e for e in episodes if e.status == "done"]
        m = self._metrics
        for e in done:
            m["rewards/mean"].append(e.reward.total)
            m["rewards/environment"].append(e.reward.env)
            m["goals_reached"].append(float(e.reward.goals))
            m["formatted_generations"].append(float(e.reward.formatted))
            m["success"].append(float(e.success))
        n = len(episodes) // self.config.num_generations
        for index in range(n):
            values = [rewards[p] for p in range(index, len(rewards), n) if rewards[p] is not None]
            if len(values) > 1:
                m["reward_std"].append(statistics.stdev(values))
        m["advantage_abs"].extend(abs(a) for a in advantages)
        if kl is not None:
            m["kl"].append(kl)
        counts = {"episodes": len(episodes), "agent_turns": sum(e.agent_turns for e in episodes),
                  "generations": sum(len(e.samples) for e in episodes), "agent_tokens": tokens}
        for key, value in counts.items():
            m[f"step/{key}"].append(value)  # summed per step below
            self.budget()[key] += value
        m["step/failed_episodes"].append(len(episodes) - len(done))
        m["seconds/episodes"].append(played)
        m["seconds/loss"].append(learned)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metrics:
            for key, values in self._metrics.items():
                if key.startswith(("step/", "seconds/")) or key == "truncated_generations":
                    logs[key.split("/", 1)[-1] if key.startswith("step/") else key] = sum(values)
                elif values:
                    logs[key] = sum(values) / len(values)
            logs.update({f"budget/{k}": v for k, v in self.budget().items()})
            self._metrics.clear()
        super().log(logs, start_time)

