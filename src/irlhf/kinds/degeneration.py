"""The `degeneration` experiment kind: one student (or the teacher) in the real-text world,
trained by one method and scored for degeneration and exposure bias.

A run: text world (cached teacher) -> method -> policy -> metrics. Methods, all from a fresh
student of the same size (`student`) and, except RLHF's extra phase, the same optimiser steps:

* `sft`:       behaviour cloning on `n_demonstrations` teacher samples (the world's temperature);
* `sft_equal`: the same on `sft_equal_demonstrations` samples: GKD's budget (its demonstration
               tokens plus oracle queries), with SFT's steps (= GKD's);
* `gkd`:       on-policy distillation (GKD, Agarwal et al. 2024; `irlhf.algorithms.gkd`): each
               step a batch of the student's own samples with probability `lmbda`, else of
               `gkd_demonstrations` teacher samples, labelled with the teacher's distribution,
               generalized JSD; nothing aggregated;
* `rlhf`:      the SFT student, then one RLHF round: pairs of its samples labelled by a
               Bradley-Terry annotator on the gold reward, a reward model initialised from the SFT
               student (as InstructGPT), RLOO with a KL penalty to the SFT student
               (`irlhf.algorithms.rlhf.rl_policy_step`);
* `real_text`: the control — the same student trained on windows of the training plays;
* `teacher`:   no training; the teacher's own numbers (sampled at the world's temperature).

Metrics (records with `decoding` = greedy | sample): rep_4, seq_rep_4, distinct_4, loop_rate,
soft_loop_rate, gold_return, oracle_nll; exposure (`decoding`, `L`; R along the model's own
greedy or sampled generations, eps on the teacher's samples): pct_ex_acc_err, acc_err, eps, R;
self-reinforcement (`n_repeats`): tp, ip, wr. A trained student is checkpointed, so an
interrupted run resumes at evaluation with the same numbers.
"""

from __future__ import annotations

import copy
import time
from typing import Literal

import torch
from pydantic import BaseModel, Field

from irlhf.algorithms.gkd import GKDConfig, train_gkd
from irlhf.algorithms.reward_model import NeuralRewardModel, RewardModelConfig
from irlhf.algorithms.rlhf import rl_policy_step
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.experiments import RunContext, register_kind
from irlhf.kinds.common import FROZEN, model_state
from irlhf.metrics import degeneration as deg
from irlhf.metrics.exposure import exposure_bias_mc
from irlhf.metrics.reward import comparison_accuracy
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences
from irlhf.worlds.annotator import Annotator, sample_pairs
from irlhf.worlds.base import Demonstrations, ExpertOracle
from irlhf.worlds.pretraining import pretrain_lm
from irlhf.worlds.text import TextSpec, TextWorld, make_text_world
from irlhf.worlds.tokenizer import encode

METHODS = ("teacher", "sft", "sft_equal", "gkd", "rlhf", "real_text")


class StudentSpec(BaseModel):
    """The student: a GPT-2 smaller than the teacher, with the teacher's tokenizer."""

    model_config = FROZEN
    n_layer: int = Field(2, ge=1)
    """Transformer blocks."""
    n_embd: int = Field(96, ge=8)
    """Width."""
    n_head: int = Field(4, ge=1)
    """Attention heads (must divide n_embd)."""


class RLHFSpec(BaseModel):
    """One RLHF round from the SFT student."""

    model_config = FROZEN
    comparisons: int = Field(128, ge=1)
    """Annotator comparisons (pairs of SFT samples of the same prompt)."""
    annotator_beta: float = Field(10.0, ge=0.0)
    """Bradley-Terry rationality on the gold reward (1 / nats of mean token log-prob)."""
    reward_model: RewardModelConfig = RewardModelConfig(
        kind="neural", steps=60, batch_size=16, lr=3e-4
    )
    """Reward model fit (its backbone is a copy of the SFT student)."""
    rloo: RLOOConfig = RLOOConfig(
        iterations=20, prompts_per_iteration=8, samples_per_prompt=4, lr=3e-4, kl_coef=0.05
    )
    """RLOO against the reward model (max_new_tokens is set to the world's horizon)."""


class EvalSpec(BaseModel):
    """How the trained model is scored."""

    model_config = FROZEN
    n_prompts: int = Field(48, ge=1)
    """Held-out prompts, each continued greedily and by sampling at temperature 1."""
    mc_samples: int = Field(48, ge=2)
    """Monte-Carlo sequences (model and teacher each) for the exposure metrics."""
    n_sentences: int = Field(12, ge=1)
    """Held-out lines repeated in the context for the self-reinforcement curve."""
    max_repeats: int = Field(8, ge=2)
    """Copies of each line (a line has at most context // max_repeats tokens)."""
    min_sentence_tokens: int = Field(6, ge=2)
    """Shortest line used (tokens)."""
    loop_min_repeats: int = Field(3, ge=2)
    """An exact loop: a suffix of period <= loop_max_period repeated this many times."""
    loop_max_period: int = Field(32, ge=1)
    """Longest loop period looked for (tokens)."""


class DegenerationConfig(BaseModel):
    """One degeneration run (`kind = "degeneration"`)."""

    model_config = FROZEN
    kind: Literal["degeneration"] = "degeneration"
    seed: int = 0
    """Seed of the student, its data and the evaluation prompts."""
    world: TextSpec = TextSpec()
    """The text world (corpus, teacher, prompt and completion lengths, gold reward)."""
    method: Literal["teacher", "sft", "sft_equal", "gkd", "rlhf", "real_text"] = "sft"
    """How the student is trained (see the module docstring)."""
    student: StudentSpec = StudentSpec()
    n_demonstrations: int = Field(512, ge=1)
    """Teacher samples for SFT (and RLHF's SFT phase)."""
    gkd_demonstrations: int = Field(128, ge=1)
    """GKD's fixed data set: teacher samples, soft-labelled on first use (memory: x T x V)."""
    sft_equal_demonstrations: int = Field(1856, ge=1)
    """Teacher samples for `sft_equal`: GKD's demonstrations plus its expected oracle queries in
    sequences (`studies.budgets.equal_budget_demos`; 1856 for the defaults here)."""
    sft: SFTConfig = SFTConfig(steps=200, batch_size=16, lr=3e-3)
    """SFT fit; the control uses the same steps, batch size and learning rate on real text."""
    gkd: GKDConfig = GKDConfig(steps=200, batch_size=16, lr=3e-3, lmbda=0.5, beta=0.5)
    """On-policy distillation (GKD)."""
    rlhf: RLHFSpec = RLHFSpec()
    eval: EvalSpec = EvalSpec()


def make_student(config: DegenerationConfig, world: TextWorld) -> CausalLMPolicy:
    s = config.student
    if s.n_embd % s.n_head:
        raise ValueError(f"student.n_head ({s.n_head}) must divide student.n_embd ({s.n_embd})")
    return CausalLMPolicy.tiny(
        world.token_vocab_size,
        world.vocab_size,
        n_layer=s.n_layer,
        n_embd=s.n_embd,
        n_head=s.n_head,
        max_length=world.prompt_length + world.horizon,
        seed=config.seed,
    )


def train(
    config: DegenerationConfig, world: TextWorld, generator: torch.Generator, ctx: RunContext
) -> tuple[CausalLMPolicy, dict, CausalLMPolicy | None]:
    """The trained student, the feedback it used and, for `rlhf`, its SFT start (a copy taken
    before the RL round: the same model and numbers as the `sft` method's run of this seed)."""
    student, dynamics, feedback = make_student(config, world), world.dynamics(), {}
    sft_start: CausalLMPolicy | None = None
    if config.method == "real_text":
        length = world.prompt_length + world.horizon
        s = config.sft
        records = pretrain_lm(student, world.train_ids, s.steps, s.batch_size, length - 1, s.lr,
                              generator)  # fmt: skip
        feedback["real_text_tokens"] = s.steps * s.batch_size * length
        feedback["optimizer_steps"] = s.steps
    elif config.method == "gkd":
        demos = Demonstrations.collect(world, config.gkd_demonstrations, generator)
        oracle = ExpertOracle(world)
        gkd = train_gkd(student, demos, oracle, dynamics, config.gkd, generator)
        student, records = gkd.policy, gkd.records
        feedback |= {"demo_tokens": demos.n_tokens, "oracle_queries": oracle.queries}
        feedback["optimizer_steps"] = config.gkd.steps
    else:  # sft, sft_equal, and the first phase of rlhf
        n = config.sft_equal_demonstrations if config.method == "sft_equal" else None
        demos = Demonstrations.collect(world, n or config.n_demonstrations, generator)
        sft = train_sft(student, demos, dynamics, config.sft, generator)
        student, records = sft.policy, sft.records
        feedback |= {"demo_tokens": demos.n_tokens, "optimizer_steps": config.sft.steps}
        if config.method == "rlhf":
            sft_start = copy.deepcopy(student).eval()
            rl_records, rlhf_feedback = rlhf_round(config.rlhf, world, student, generator)
            student = rl_records.pop("policy")
            records += rl_records["records"]
            feedback |= rlhf_feedback
    for record in records[:: max(1, len(records) // 200)]:
        ctx.log(record)
    return student, feedback, sft_start


def rlhf_round(
    spec: RLHFSpec, world: TextWorld, sft: CausalLMPolicy, generator: torch.Generator
) -> tuple[dict, dict]:
    """Comparisons on the SFT student's samples -> reward model -> RLOO from the SFT student:
    ({"policy", "records", "reward_model"}, the feedback counts)."""
    dynamics = world.dynamics()
    annotator = Annotator(world, beta=spec.annotator_beta)
    first, second = sample_pairs(dynamics, sft, spec.comparisons, generator)
    comparisons = annotator.compare(first, second, generator)
    reward_model = NeuralRewardModel(dynamics, spec.reward_model, backbones=[sft])
    fit = reward_model.fit(comparisons, generator)
    held_first, held_second = sample_pairs(dynamics, sft, 128, generator)
    gold = Annotator(world, beta=1e9)  # noiseless: agreement with the gold reward
    held = gold.compare(held_first, held_second, generator)
    step = rl_policy_step(dynamics, "rloo", spec.rloo, generator)
    rl = step(sft, reward_model, sft)
    feedback = {
        "annotator_comparisons": annotator.comparisons,
        "rm_train_accuracy": fit["rm/train_accuracy"],
        "rm_held_out_accuracy": comparison_accuracy(reward_model, held),
    }
    return {"policy": rl.policy, "records": rl.records, "reward_model": reward_model}, feedback


# ---- evaluation ----------------------------------------------------------------------------


def repeated_lines(world: TextWorld, spec: EvalSpec) -> list[list[int]]:
    """`n_sentences` held-out lines (each with its newline) short enough to fit max_repeats
    copies in the context; the same lines for every model and seed."""
    max_tokens = (world.prompt_length + world.horizon) // spec.max_repeats
    text = world.tokenizer.decode(world.held_out_ids[:200_000].tolist())
    lines = []
    for line in text.split("\n"):
        ids = encode(world.tokenizer, line.strip() + "\n").tolist()
        if len(line.strip()) > 10 and spec.min_sentence_tokens <= len(ids) <= max_tokens:
            lines.append(ids)
    if not lines:
        raise ValueError(f"no held-out line has {spec.min_sentence_tokens}..{max_tokens} tokens")
    picks = torch.randperm(len(lines), generator=torch.Generator().manual_seed(0))
    return [lines[i] for i in picks[: spec.n_sentences].tolist()]


class GreedyDecoding:
    """A policy that generates greedily but is scored by its full next-token distribution (for
    the exposure metrics along greedy generations: R uses KL(teacher || model) per prefix)."""

    def __init__(self, policy: CausalLMPolicy) -> None:
        self.policy, self.device = policy, policy.device

    def next_token_logits(self, seqs: Sequences) -> torch.Tensor:
        return self.policy.next_token_logits(seqs)

    def sample(
        self, prompts: torch.Tensor, max_new_tokens: int, generator: torch.Generator, **_: object
    ) -> Sequences:
        return self.policy.sample(prompts, max_new_tokens, generator, greedy=True)


def evaluate(
    policy: CausalLMPolicy,
    world: TextWorld,
    config: DegenerationConfig,
    ctx: RunContext,
    samples_prefix: str = "",
) -> list[dict]:
    """Repetition under greedy and sampled decoding, exposure along both, self-reinforcement."""
    spec, P = config.eval, world.prompt_length
    generator = torch.Generator().manual_seed(10_000 + config.seed)  # same prompts per seed
    prompts = world.sample_prompts(spec.n_prompts, generator)
    records = []
    # students sample at temperature 1; the teacher at the world's (its samples are the data)
    temperature = world.temperature if config.method == "teacher" else 1.0
    for decoding in ("greedy", "sample"):
        greedy = decoding == "greedy"
        seqs = policy.sample(prompts, world.horizon, generator, temperature, greedy=greedy)
        seqs = seqs.to("cpu")
        completions = seqs.tokens[:, P:]
        values = {
            "rep_4": deg.rep_n(completions, 4),
            "seq_rep_4": deg.seq_rep_n(completions, 4),
            "distinct_4": deg.distinct_n(completions, 4),
            "loop_rate": deg.loop_rate(completions, spec.loop_min_repeats, spec.loop_max_period),
            "soft_loop_rate": deg.soft_loop_rate(completions),
            "gold_return": float(world.true_return(seqs).mean()),
            "oracle_nll": float(world.oracle_nll(seqs).mean()),
        }
        records += [{"metric": k, "decoding": decoding, "value": v} for k, v in values.items()]
        ctx.save_samples(
            samples_prefix + decoding,
            [
                {"prompt": world.decode(s[:P]), "completion": world.decode(s[P:])}
                for s in seqs.tokens[:8]
            ],
        )
    for decoding in ("greedy", "sample") if config.method != "teacher" else ():
        # R along the model's own greedy or sampled generations; the teacher has no exposure
        # bias against itself
        decoder = GreedyDecoding(policy) if decoding == "greedy" else policy
        exposure = exposure_bias_mc(world, decoder, spec.mc_samples, generator, batch_size=32)
        for name in ("pct_ex_acc_err", "acc_err", "eps", "R"):
            lengths, series = exposure.defined(name)  # no record where a ratio is undefined
            records += [
                {"metric": name, "decoding": decoding, "L": int(L), "value": float(v)}
                for L, v in zip(lengths, series, strict=True)
            ]
        records += [
            {"metric": "exposure_note", "decoding": decoding, "value": 1.0, "note": note}
            for note in exposure.notes
        ]
    lines = repeated_lines(world, spec)
    for row in deg.self_reinforcement(policy, lines, spec.max_repeats):
        records += [
            {"metric": k, "n_repeats": row["n_repeats"], "value": row[k]}
            for k in ("tp", "ip", "wr")
        ]
    return records


def run(config: DegenerationConfig, ctx: RunContext) -> list[dict]:
    world = make_text_world(config.world)
    started = time.perf_counter()
    sft_start: CausalLMPolicy | None = None
    if config.method == "teacher":
        policy, feedback = world.expert, {}
        records = [
            {"metric": f"teacher/{k}", "value": float(v)}
            for k, v in world.info.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
    else:
        records = []
        checkpoint = ctx.load_checkpoint()
        if checkpoint is not None:
            policy = make_student(config, world)
            own = {k: v for k, v in checkpoint.tensors.items() if not k.startswith(SFT_PREFIX)}
            policy.model.load_state_dict(own)
            start = {k[len(SFT_PREFIX) :]: v for k, v in checkpoint.tensors.items()
                     if k.startswith(SFT_PREFIX)}  # fmt: skip
            if start:
                sft_start = make_student(config, world)
                sft_start.model.load_state_dict(start)
            feedback = dict(checkpoint.meta)
        else:
            generator = torch.Generator().manual_seed(config.seed)
            policy, feedback, sft_start = train(config, world, generator, ctx)
            tensors = model_state(policy)
            if sft_start is not None:
                tensors |= {SFT_PREFIX + k: v for k, v in model_state(sft_start).items()}
            ctx.save_checkpoint(1, tensors, feedback)
    train_seconds = time.perf_counter() - started
    policy.eval()
    records += evaluate(policy, world, config, ctx)
    records.append({"metric": "train_seconds", "value": train_seconds})
    records += [{"metric": k, "value": float(v)} for k, v in feedback.items()]
    if sft_start is not None:
        # the RLHF run's SFT start, evaluated as the `sft` method's run of this seed would be
        # (the same student, the same evaluation stream): the study needs no separate SFT run
        start_records = evaluate(sft_start.eval(), world, config, ctx, samples_prefix="sft_")
        sft_budget = {"demo_tokens": feedback["demo_tokens"], "optimizer_steps": config.sft.steps}
        start_records += [{"metric": k, "value": float(v)} for k, v in sft_budget.items()]
        records += [r | {"stage": "sft"} for r in start_records]
    return records


SFT_PREFIX = "sft_start."
"""Checkpoint tensor prefix of an RLHF run's SFT start."""


# version 2: the RLHF student's RLOO draws from the run's generator (was seed 0)
# version 3: GKD is GKD (was soft-label DAgger), the teacher samples at the world's temperature
# version 4: an rlhf run also evaluates its SFT start (records with stage = "sft")
register_kind("degeneration", DegenerationConfig, run, version=4)
