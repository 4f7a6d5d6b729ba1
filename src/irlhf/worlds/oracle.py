"""Neural worlds: the expert is a causal LM over tokens, so its probability of anything is exact.

`LMWorld` is what the neural oracle world and the real-text world (`irlhf.worlds.text`) share:
an expert `CausalLMPolicy` at a sampling temperature, prompts of `prompt_length` tokens,
completions of `horizon` tokens, the expert's exact next-token distribution at every prefix
(`expert_probs`), the exact oracle NLL of any sample (`oracle_nll`), a demonstrator view (the
expert at another temperature, mixed with uniform noise) and a `dynamics()` view that exposes
only prompts, sizes and the horizon. Subclasses give the prompts and the gold reward.

`OracleWorld` is the "oracle" set-up of SeqGAN (Yu et al. 2017) and Texygen (Zhu et al. 2018): a
randomly initialised language model *is* the expert, so the NLL of a learner's samples under it
(NLL-oracle) is exact. The oracle is a small GPT-2 whose weight matrices are drawn with a larger
standard deviation (`init_std`, default 0.3, instead of GPT-2's 0.02) so that its next-token
distributions are far from uniform and depend on the context (SeqGAN's oracle LSTM used N(0, 1)):
at the defaults (V = 256, 2 layers, 64 wide) the expert's per-token entropy on its own samples
is ~3.2 nats of the uniform 5.5 (0.02 gives 5.5, 1.0 gives 0.7; `LMWorld.expert_entropy`).
Prompts are one of `n_prompts` prompt-only tokens. The gold reward ("the human") is a second
fixed random network (Gao et al. 2022 use a gold reward model the same way): a GPT-2 of the
same shape with its own seed reads the sequence, and token t earns

    r_t = tanh(u . LN(h_t) / sqrt(d))       (u ~ N(0, I_d) fixed, h_t its last hidden state at t)

so R*(x, y) = sum_t r_t is a sequence-level score with an exact per-token decomposition, in
[-horizon, horizon], unrelated to the oracle's likelihood (there is something to gain beyond the
demonstrations).
"""

from __future__ import annotations

import math
from typing import cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class LMDemonstrator:
    """A causal LM at sampling `temperature` (0 = greedy), mixed with uniform noise over the
    action tokens with weight `epsilon`: p = (1 - eps) softmax(logits / T) + eps / V.

    Exposes what algorithms and metrics call on a neural policy: `next_token_logits` (the log of
    p, a valid logit vector), `log_probs`, `sample`; it never trains."""

    def __init__(self, policy: CausalLMPolicy, temperature: float = 1.0, epsilon: float = 0.0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (got {temperature})")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be between 0 and 1 (got {epsilon})")
        self.policy, self.temperature, self.epsilon = policy, temperature, epsilon
        self.action_vocab_size = policy.action_vocab_size

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def eval(self) -> LMDemonstrator:
        self.policy.eval()
        return self

    def _mix(self, logits: Tensor) -> Tensor:
        """(..., V) logits -> (..., V) log p of the degraded distribution (float32)."""
        logits = logits.float()
        if self.temperature == 0:
            probs = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        else:
            probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.epsilon > 0:
            probs = (1 - self.epsilon) * probs + self.epsilon / logits.shape[-1]
        return probs.clamp_min(1e-30).log()

    def next_token_logits(self, seqs: Sequences) -> Tensor:
        """(B, T, V) log-probs of token t given tokens < t (position 0 is uniform)."""
        return self._mix(self.policy.next_token_logits(seqs))

    def next_log_probs(self, prefixes: Sequences) -> Tensor:
        """(B, V) log p of the token after each unpadded prefix: only the last position reaches
        the output layer."""
        T = prefixes.length
        logits, _ = self.policy.action_logits(prefixes, T - 1, T)  # (B, 1, V)
        return self._mix(logits[:, -1])

    def log_probs(self, seqs: Sequences) -> Tensor:
        """(B, T) log p(token_t | tokens_<t) at completion positions, 0 elsewhere."""
        logp = self.next_token_logits(seqs)  # (B, T, V)
        tokens = seqs.tokens.clamp(max=self.action_vocab_size - 1).unsqueeze(-1)
        return logp.gather(-1, tokens).squeeze(-1) * seqs.completion_mask

    @torch.inference_mode()
    def sample(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        generator: torch.Generator,
        chunk: int = 256,
        **_: object,
    ) -> Sequences:
        """Continue prompts [B, P] by `max_new_tokens` tokens, in chunks of `chunk` prompts.
        Without noise this is the policy's own KV-cached sampler at the temperature; with noise,
        a per-step loop (the mixture needs each step's distribution) over the same KV cache."""
        if len(prompts) > chunk:
            parts = [
                self.sample(prompts[i : i + chunk], max_new_tokens, generator).to("cpu")
                for i in range(0, len(prompts), chunk)
            ]
            return Sequences.concat(parts)
        if self.epsilon == 0:
            greedy = self.temperature == 0
            temperature = 1.0 if greedy else self.temperature
            return self.policy.sample(
                prompts, max_new_tokens, generator, temperature=temperature, greedy=greedy
            )
        model, prompts = self.policy.model.eval(), prompts.to(self.device)
        cache = self.policy.kv_cache()  # filled in place by every call below
        out = model(input_ids=prompts, cache=cache, use_cache=True, logits_to_keep=1)
        tokens = []
        for step in range(max_new_tokens):
            logp = self._mix(out.logits[:, -1, : self.action_vocab_size])  # (B, V)
            token = torch.multinomial(logp.exp(), 1, generator=generator)  # (B, 1)
            tokens.append(token)
            if step + 1 < max_new_tokens:
                out = model(input_ids=token, cache=cache, use_cache=True)
        completion = torch.cat(tokens, 1) if tokens else prompts[:, :0]
        return Sequences.from_prompt_and_completion(prompts, completion)


class LMDynamics:
    """What an algorithm may know of a neural world: sizes, horizon and the prompt distribution
    (in language the transition is "append the token"), never the expert or the reward."""

    def __init__(self, world: LMWorld) -> None:
        self._world = world
        self.vocab_size = world.vocab_size
        self.token_vocab_size = world.token_vocab_size
        self.horizon = world.horizon
        self.prompt_length = world.prompt_length
        self.max_length = world.prompt_length + world.horizon

    def sample_prompts(self, n: int, generator: torch.Generator) -> Tensor:
        return self._world.sample_prompts(n, generator)


class LMWorld:
    """Base of the neural worlds (see the module docstring). Subclasses set `expert`,
    `vocab_size` (action tokens), `horizon`, `prompt_length`, `temperature` and implement
    `sample_prompts` and `true_rewards`."""

    expert: CausalLMPolicy
    vocab_size: int
    horizon: int
    prompt_length: int
    temperature: float = 1.0
    batch_size: int = 64
    """Sequences per expert forward pass (memory: batch x length x vocabulary floats)."""

    @property
    def token_vocab_size(self) -> int:
        return self.expert.vocab_size

    def sample_prompts(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def true_rewards(self, seqs: Sequences) -> Tensor:
        raise NotImplementedError

    def true_return(self, seqs: Sequences) -> Tensor:
        """[B] float64 R*(x, y): the sum of `true_rewards` over the completion."""
        return self.true_rewards(seqs).sum(dim=1)

    def dynamics(self) -> LMDynamics:
        return LMDynamics(self)

    def demonstrator(self, temperature: float = 1.0, epsilon: float = 0.0) -> LMDemonstrator:
        """The expert degraded: sampled at `temperature` x the expert's own temperature
        (0 = greedy) and mixed with uniform noise with weight `epsilon`."""
        return LMDemonstrator(self.expert, temperature * self.temperature, epsilon)

    def _batched(self, fn, seqs: Sequences) -> Tensor:
        parts = []
        with torch.inference_mode():
            for i in range(0, seqs.batch_size, self.batch_size):
                chunk = seqs[i : i + self.batch_size].to(self.expert.device)
                parts.append(fn(chunk).cpu())
        return torch.cat(parts).clone()

    def expert_log_probs_all(self, seqs: Sequences) -> Tensor:
        """[B, T, V] float32 log expert(. | tokens_<t) at every position (0: uniform)."""
        return self._batched(lambda s: self.demonstrator().next_token_logits(s), seqs)

    def expert_probs(self, seqs: Sequences) -> Tensor:
        """[B, T, V] float32 the expert's next-token distribution at every position."""
        return self.expert_log_probs_all(seqs).exp()

    def demonstrator_probs(
        self, seqs: Sequences, temperature: float = 1.0, epsilon: float = 0.0
    ) -> Tensor:
        """[B, T, V] float32 the degraded expert's (`demonstrator`) distribution at every
        position (at temperature 0, the one-hot argmax; a floor of 1e-30 elsewhere)."""
        teacher = self.demonstrator(temperature, epsilon)
        return self._batched(lambda s: teacher.next_token_logits(s), seqs).exp()

    def next_demonstrator_probs(
        self, prefixes: Sequences, temperature: float = 1.0, epsilon: float = 0.0
    ) -> Tensor:
        """[B, V] float32 the degraded expert's distribution of the token after each (unpadded)
        prefix: one forward pass, only the last position reaches the output layer."""
        teacher = self.demonstrator(temperature, epsilon)
        return self._batched(teacher.next_log_probs, prefixes).exp()

    def expert_log_probs(self, seqs: Sequences) -> Tensor:
        """[B, T] float32 log expert(token_t | tokens_<t) on the completion, 0 elsewhere."""
        return self._batched(lambda s: self.demonstrator().log_probs(s), seqs)

    def oracle_nll(self, seqs: Sequences) -> Tensor:
        """[B] float64 the exact NLL-oracle: mean over completion tokens of -log expert (nats)."""
        n = seqs.completion_mask.sum(dim=1).clamp_min(1)
        return -self.expert_log_probs(seqs).double().sum(dim=1) / n

    def expert_entropy(self, n: int = 64, generator: torch.Generator | None = None) -> float:
        """Mean per-token entropy of the expert on its own samples (nats)."""
        generator = generator or torch.Generator().manual_seed(0)
        seqs = self.demonstrator().sample(
            self.sample_prompts(n, generator), self.horizon, generator
        )
        logp = self.expert_log_probs_all(seqs.to("cpu"))  # (B, T, V)
        entropy = -(logp.exp() * logp).sum(-1)  # (B, T)
        mask = seqs.completion_mask.cpu()
        return float(entropy[mask].mean())


class OracleSpec(BaseModel):
    """Every knob of an oracle world (the `[world]` table of a config that uses one)."""

    model_config = _FROZEN

    vocab_size: int = Field(256, ge=2)
    """Action tokens."""
    n_prompts: int = Field(4, ge=1)
    """Prompt-only tokens (ids vocab_size .. vocab_size + n_prompts - 1), drawn uniformly."""
    n_layer: int = Field(2, ge=1)
    """Oracle transformer blocks."""
    n_embd: int = Field(64, ge=8)
    """Oracle width."""
    n_head: int = Field(4, ge=1)
    """Oracle attention heads (must divide n_embd)."""
    init_std: float = Field(0.3, gt=0.0)
    """Std of the oracle's (and the gold network's) weight matrices; larger = sharper."""
    horizon: int = Field(32, ge=1)
    """Completion length in tokens."""
    oracle_temperature: float = Field(1.0, gt=0.0)
    """The expert samples at this temperature from the oracle's logits."""
    seed: int = 0
    """Seed of the oracle (the gold network uses seed + 1)."""


def _random_gpt2(spec: OracleSpec, vocab: int, seed: int) -> CausalLMPolicy:
    if spec.n_embd % spec.n_head:
        raise ValueError(f"n_head ({spec.n_head}) must divide n_embd ({spec.n_embd})")
    policy = CausalLMPolicy.tiny(
        vocab,
        action_vocab_size=spec.vocab_size,
        n_layer=spec.n_layer,
        n_embd=spec.n_embd,
        n_head=spec.n_head,
        max_length=spec.horizon + 1,
        seed=seed,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in policy.model.parameters():
            if param.dim() == 2:  # embeddings and projections; biases and norms keep defaults
                param.copy_(torch.randn(param.shape, generator=generator) * spec.init_std)
    for param in policy.parameters():
        param.requires_grad_(False)
    return policy.eval()


class OracleWorld(LMWorld):
    """The neural oracle world built from an `OracleSpec` (or keyword knobs)."""

    def __init__(self, spec: OracleSpec | None = None, **knobs: object) -> None:
        spec = spec or OracleSpec()
        self.spec = OracleSpec(**{**spec.model_dump(), **knobs}) if knobs else spec
        s = self.spec
        self.vocab_size, self.horizon, self.prompt_length = s.vocab_size, s.horizon, 1
        self.temperature = s.oracle_temperature
        self.expert = _random_gpt2(s, s.vocab_size + s.n_prompts, s.seed)
        self.gold = _random_gpt2(s, s.vocab_size + s.n_prompts, s.seed + 1)
        u = torch.randn(s.n_embd, generator=torch.Generator().manual_seed(s.seed + 2))
        self.gold_direction = u / math.sqrt(s.n_embd)

    def __repr__(self) -> str:
        return f"OracleWorld({self.spec})"

    def sample_prompts(self, n: int, generator: torch.Generator) -> Tensor:
        """[n, 1] prompt tokens, uniform over the `n_prompts` prompt-only ids."""
        return torch.randint(self.spec.n_prompts, (n, 1), generator=generator) + self.vocab_size

    def true_rewards(self, seqs: Sequences) -> Tensor:
        """[B, T] float64 r_t = tanh(u . LN(h_t) / sqrt(d)) on completion tokens, 0 elsewhere."""

        def rewards(chunk: Sequences) -> Tensor:
            attention_mask = (chunk.prompt_mask | chunk.completion_mask).long()
            backbone = cast(nn.Module, self.gold.model.transformer)  # GPT-2 without its head
            out = backbone(input_ids=chunk.tokens, attention_mask=attention_mask)
            return torch.tanh(out.last_hidden_state @ self.gold_direction)  # (B, T)

        return self._batched(rewards, seqs).double() * seqs.completion_mask
