"""Reward models learned from pairwise comparisons with the Bradley-Terry loss.

A reward model r_phi scores a whole sequence and is fitted by maximising the Bradley-Terry
likelihood of the annotator's choices, L = -mean log sigmoid(r(chosen) - r(rejected))
(`irlhf.losses.bradley_terry`; Christiano et al. 2017, Ouyang et al. 2022).

* `TabularRewardModel`: a table r[s, a] over (latent state, token); the sequence reward is the
  sum of r along the completion (so it is linear in the (state, token) visit counts and the fit is
  a convex L2-regularised logistic regression, solved to optimality by L-BFGS). The table is what
  exact KL-regularised soft policy iteration (`irlhf.algorithms.rlhf`) optimises.
* `NeuralRewardModel`: a linear scalar head on a small Hugging Face causal LM, reading the last
  hidden state at the last completion token (InstructGPT's reward model), trained by minibatch
  AdamW and continued from its previous weights on every refit.

Either can be an ensemble of K members fitted on bootstrap resamples of the comparisons; `score`
is the members' mean and `score_std` their spread (an epistemic-uncertainty signal). A neural
reward model is saved as a directory (`NeuralRewardModel.save` / `.load`: safetensors weights and
a JSON config, never a pickle), which `irlhf measure rewards` reads.
Also here: the tabular sequence features (`state_action_counts`, `sequence_log_probs`) that the
reward model, DPO and best-of-n share.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from irlhf import losses
from irlhf.algorithms.optim import adamw
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Dynamics, NeuralPolicy, TabularDynamics
from irlhf.types import Comparisons, Sequences


class RewardModelConfig(BaseModel):
    """How a reward model is built and fitted (the `[reward_model]` table of a config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    kind: Literal["tabular", "neural"] = "tabular"
    """"tabular" (a table over (state, token)) or "neural" (scalar head on a causal LM)."""
    ensemble_size: int = Field(1, ge=1)
    """Members K; with K > 1 each is fitted on its own bootstrap resample of the comparisons."""
    l2: float = Field(0.01, ge=0.0)
    """Tabular: L2 penalty (l2 / 2) ||r||^2 added to the mean Bradley-Terry loss."""
    max_iter: int = Field(500, ge=1)
    """Tabular: L-BFGS iterations per fit."""
    steps: int = Field(300, ge=0)
    """Neural: AdamW steps per fit (the model continues from its previous weights)."""
    batch_size: int = Field(32, ge=1)
    """Neural: comparisons per step."""
    lr: float = Field(1e-3, gt=0.0)
    """Neural: AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """Neural: AdamW weight decay."""
    n_layer: int = Field(2, ge=1)
    """Neural: transformer blocks of the backbone."""
    n_embd: int = Field(64, ge=1)
    """Neural: width of the backbone (hidden size)."""
    n_head: int = Field(4, ge=1)
    """Neural: attention heads (must divide n_embd)."""
    pooling: Literal["last", "sum"] = "last"
    """Neural: read the head at the last completion token ("last", InstructGPT) or sum its
    per-token outputs over the completion ("sum", a dense reward like the tabular model)."""
    seed: int = 0
    """Neural: initialisation seed of member 0 (member k uses seed + k)."""


# --- tabular sequence features ----------------------------------------------------------------


def state_action_counts(dynamics: TabularDynamics, seqs: Sequences) -> Tensor:
    """[B, S * V] float64: how often each (state, token) pair occurs in each completion."""
    S, V = dynamics.n_states, dynamics.vocab_size
    states = dynamics.states(seqs)  # (B, T)
    flat = states * V + seqs.tokens.clamp(0, V - 1)  # (B, T)
    weights = seqs.completion_mask.double()
    return torch.zeros(seqs.batch_size, S * V, dtype=torch.float64).scatter_add_(1, flat, weights)


def sequence_log_probs(
    policy: TabularPolicy | NeuralPolicy, seqs: Sequences, dynamics: Dynamics | None
) -> Tensor:
    """[B] log pi(completion | prompt): sum over completion tokens of log pi(a_t | s_t).

    A TabularPolicy is scored through `dynamics`; any other policy through its
    `log_probs(seqs)` -> [B, T] (which may carry gradients)."""
    if isinstance(policy, TabularPolicy):
        log_table = policy.probs.clamp_min(1e-300).log().flatten()  # (S * V,)
        return state_action_counts(cast(TabularDynamics, dynamics), seqs) @ log_table
    return policy.log_probs(seqs.to(policy.device)).sum(dim=1)


# --- comparisons --------------------------------------------------------------------------------


def select_comparisons(comparisons: Comparisons, rows: Tensor) -> Comparisons:
    """The comparisons at `rows` (may repeat: bootstrap resamples)."""
    return Comparisons(comparisons.chosen[rows], comparisons.rejected[rows])


def concat_comparisons(batches: list[Comparisons]) -> Comparisons:
    """All comparisons of several batches (equal sequence lengths)."""
    return Comparisons(
        Sequences.concat([b.chosen for b in batches]),
        Sequences.concat([b.rejected for b in batches]),
    )


# --- the ensemble shared by both kinds --------------------------------------------------------


class _RewardEnsemble:
    """K members; subclasses implement `score_members` and `_fit_member`."""

    config: RewardModelConfig

    def score_members(self, seqs: Sequences) -> Tensor:
        """[K, B] float64 sequence reward of each member."""
        raise NotImplementedError

    def _fit_member(self, k: int, comparisons: Comparisons, generator: torch.Generator) -> None:
        raise NotImplementedError

    def score(self, seqs: Sequences) -> Tensor:
        """[B] float64 the ensemble-mean sequence reward."""
        return self.score_members(seqs).mean(dim=0)

    def score_std(self, seqs: Sequences) -> Tensor:
        """[B] float64 the members' standard deviation (0 for a single model)."""
        members = self.score_members(seqs)
        return members.std(dim=0) if len(members) > 1 else torch.zeros_like(members[0])

    def fit(self, comparisons: Comparisons, generator: torch.Generator) -> dict[str, float]:
        """Fit every member (on a bootstrap resample when K > 1). Returns the ensemble's
        training metrics on all `comparisons` ("rm/train_loss", "rm/train_accuracy", ...)."""
        n = len(comparisons)
        if n == 0:
            raise ValueError("a reward model needs at least one comparison")
        for k in range(self.config.ensemble_size):
            bootstrap = self.config.ensemble_size > 1
            rows = torch.randint(n, (n,), generator=generator) if bootstrap else torch.arange(n)
            self._fit_member(k, select_comparisons(comparisons, rows), generator)
        _, metrics = losses.bradley_terry(
            self.score(comparisons.chosen), self.score(comparisons.rejected)
        )
        return {
            "rm/comparisons": n,
            "rm/train_loss": metrics["loss/bradley_terry"],
            "rm/train_accuracy": metrics["bt/accuracy"],
            "rm/train_margin": metrics["bt/margin"],
        }


class TabularRewardModel(_RewardEnsemble):
    """r[s, a] tables, one per member; sequence reward = sum of r along the completion."""

    def __init__(
        self, dynamics: TabularDynamics, config: RewardModelConfig = RewardModelConfig()
    ) -> None:
        self.dynamics = dynamics
        self.config = config
        shape = (config.ensemble_size, dynamics.n_states, dynamics.vocab_size)
        self.tables = torch.zeros(shape, dtype=torch.float64)  # (K, S, V)

    @property
    def table(self) -> Tensor:
        """[S, V] the ensemble-mean reward table (its sequence rewards are `score`)."""
        return self.tables.mean(dim=0)

    def score_members(self, seqs: Sequences) -> Tensor:
        counts = state_action_counts(self.dynamics, seqs)  # (B, S * V)
        return self.tables.flatten(1) @ counts.T  # (K, B)

    def _fit_member(self, k: int, comparisons: Comparisons, generator: torch.Generator) -> None:
        chosen = state_action_counts(self.dynamics, comparisons.chosen)  # (N, S * V)
        rejected = state_action_counts(self.dynamics, comparisons.rejected)
        # Convex: the optimum does not depend on the start, so every fit starts from zero.
        weights = torch.zeros(chosen.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weights],
            max_iter=self.config.max_iter,
            tolerance_grad=1e-10,
            tolerance_change=1e-14,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss, _ = losses.bradley_terry(chosen @ weights, rejected @ weights)
            penalty, _ = losses.l2_penalty([weights], 0.5 * self.config.l2)
            loss = loss + penalty
            loss.backward()
            return loss

        optimizer.step(closure)
        self.tables[k] = weights.detach().view(self.dynamics.n_states, self.dynamics.vocab_size)


class _ScalarHeadModel(nn.Module):
    """A causal LM backbone + linear head on its last hidden states: read at the last completion
    token (pooling "last") or summed over the completion tokens (pooling "sum")."""

    def __init__(self, backbone: nn.Module, hidden_size: int, pooling: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        self.pooling = pooling

    def forward(self, seqs: Sequences) -> Tensor:
        from irlhf.policies.lean_gpt2 import LeanGPT2  # transformers loads only when needed

        attention_mask = seqs.prompt_mask | seqs.completion_mask
        mask = seqs.completion_mask
        positions = torch.arange(seqs.length, device=seqs.tokens.device)
        last = (mask * positions).argmax(dim=1)  # (B,) last completion token
        lean = LeanGPT2.of(self.backbone, attention_mask)
        if lean is not None and bool(mask.any(dim=1).all()):
            # The GPT-2 fast path (issue 7): the last hidden states only at the positions the
            # pooling reads (from the first completion token, or the earliest last one, up to
            # the latest last one), a prompt shared by several rows (a comparison's chosen and
            # rejected) computed once; see `LeanGPT2.hidden_states`.
            first = int(mask.any(dim=0).long().argmax()) if self.pooling == "sum" else None
            start = int(last.min()) if first is None else first
            end, P = int(last.max()) + 1, seqs.prompt_length  # rows may share prompts
            hidden = lean.hidden_states(seqs.tokens, start, end, P)
            mask, last = mask[:, start : start + hidden.shape[1]], last - start
        else:
            hidden = self.backbone(input_ids=seqs.tokens, attention_mask=attention_mask.long())
            hidden = hidden.last_hidden_state  # (B, T, H)
        if self.pooling == "sum":
            return (self.head(hidden).squeeze(-1) * mask).sum(dim=1)  # (B,)
        picked = hidden[torch.arange(seqs.batch_size, device=hidden.device), last]  # (B, H)
        return self.head(picked).squeeze(-1)  # (B,)


class NeuralRewardModel(_RewardEnsemble):
    """InstructGPT-style reward model: a scalar head on a causal LM backbone (one per member).

    backbones: optional causal LM policies to start from (e.g. the SFT policy, as InstructGPT
    does); they are deep-copied. Without them each member is `CausalLMPolicy.tiny(...)` sized
    from `dynamics` (which only that needs: a loaded reward model has none)."""

    def __init__(
        self,
        dynamics: Dynamics | None,
        config: RewardModelConfig = RewardModelConfig(kind="neural"),
        backbones: list[Any] | None = None,
    ) -> None:
        from irlhf.policies.causal_lm import CausalLMPolicy

        self.dynamics = dynamics
        self.config = config
        if backbones is None:
            if dynamics is None:
                raise ValueError("a NeuralRewardModel needs dynamics or backbones")
            backbones = [
                CausalLMPolicy.tiny(
                    dynamics.token_vocab_size,
                    dynamics.vocab_size,
                    n_layer=config.n_layer,
                    n_embd=config.n_embd,
                    n_head=config.n_head,
                    max_length=getattr(dynamics, "prompt_length", 1) + dynamics.horizon,
                    seed=config.seed + k,
                )
                for k in range(config.ensemble_size)
            ]
        if len(backbones) != config.ensemble_size:
            raise ValueError(f"need {config.ensemble_size} backbones, got {len(backbones)}")
        self.members = []
        for k, policy in enumerate(backbones):
            model = copy.deepcopy(policy.model)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + k)
                self.members.append(
                    _ScalarHeadModel(model.base_model, model.config.hidden_size, config.pooling)
                )
        self.optimizers = [
            adamw(m.parameters(), config.lr, config.weight_decay) for m in self.members
        ]

    @property
    def device(self) -> torch.device:
        return next(self.members[0].parameters()).device

    def score_members(self, seqs: Sequences, batch_size: int = 512) -> Tensor:
        out = []
        with torch.inference_mode():
            for member in self.members:
                member.eval()
                parts = [
                    member(seqs[i : i + batch_size].to(self.device)).double().cpu()
                    for i in range(0, seqs.batch_size, batch_size)
                ]
                out.append(torch.cat(parts))
        return torch.stack(out)  # (K, B)

    def _fit_member(self, k: int, comparisons: Comparisons, generator: torch.Generator) -> None:
        member, optimizer = self.members[k], self.optimizers[k]
        member.train()
        for _ in range(self.config.steps):
            rows = torch.randint(len(comparisons), (self.config.batch_size,), generator=generator)
            batch = select_comparisons(comparisons, rows)
            # chosen and rejected in one forward pass (as TRL's RewardTrainer): the same
            # arithmetic in half as many, twice as large, operator calls
            both = Sequences.concat([batch.chosen, batch.rejected]).to(self.device)
            chosen, rejected = member(both).split(len(rows))
            loss, _ = losses.bradley_terry(chosen, rejected)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(member.parameters(), 1.0)
            optimizer.step()
        member.eval()

    # ---- saving -------------------------------------------------------------------------------

    def save(self, path: str | Path, tokenizer: Any = None) -> None:
        """Write `path`/irlhf_reward_model.json (the format, the RewardModelConfig and each
        member's backbone config) and model.safetensors (member k's tensors under
        `members.k.backbone.*` and `members.k.head.*`), and the tokenizer when given."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"members.{k}.{name}": tensor.detach().to("cpu").clone().contiguous()
            for k, member in enumerate(self.members)
            for name, tensor in member.state_dict().items()
        }
        save_file(tensors, str(path / REWARD_MODEL_WEIGHTS))
        meta = {
            "format": REWARD_MODEL_FORMAT,
            "config": self.config.model_dump(),
            "backbones": [cast(Any, m.backbone).config.to_dict() for m in self.members],
        }
        (path / REWARD_MODEL_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(path)

    @staticmethod
    def load(path: str | Path) -> NeuralRewardModel:
        """A reward model written by `save` (safetensors only; a one-line ValueError when the
        directory is missing, malformed or its weights do not match its config)."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModelForCausalLM

        from irlhf.policies.causal_lm import CausalLMPolicy

        path, where = Path(path), f"reward model directory {path}"
        try:
            meta = json.loads((path / REWARD_MODEL_FILE).read_text(encoding="utf-8"))
            if meta.get("format") != REWARD_MODEL_FORMAT:
                raise ValueError(f"format {meta.get('format')!r} is not {REWARD_MODEL_FORMAT!r}")
            config = RewardModelConfig(**meta["config"])
            backbones = []
            for settings in meta["backbones"]:
                settings = dict(settings)
                backbone_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
                with torch.random.fork_rng(devices=[]):  # random init, overwritten below
                    model = AutoModelForCausalLM.from_config(backbone_config)
                backbones.append(CausalLMPolicy(model))
            reward_model = NeuralRewardModel(None, config, backbones)
            tensors = load_file(str(path / REWARD_MODEL_WEIGHTS))
            for k, member in enumerate(reward_model.members):
                prefix = f"members.{k}."
                own = {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix)}
                member.load_state_dict(own, strict=True)
            unused = {n.split(".")[1] for n in tensors} - {str(k) for k in range(len(backbones))}
            if unused:
                raise ValueError(f"weights of members {sorted(unused)} that the config lacks")
        except Exception as err:  # OSError, JSON, pydantic, safetensors, state-dict errors alike
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{where} could not be loaded: {reason}") from err
        return reward_model


REWARD_MODEL_FORMAT = "irlhf.NeuralRewardModel/1"
REWARD_MODEL_FILE = "irlhf_reward_model.json"
REWARD_MODEL_WEIGHTS = "model.safetensors"

REWARD_MODELS = {"tabular": TabularRewardModel, "neural": NeuralRewardModel}


def make_reward_model(dynamics: Dynamics, config: RewardModelConfig) -> _RewardEnsemble:
    """A fresh reward model of `config.kind`."""
    return REWARD_MODELS[config.kind](dynamics, config)
