"""Seeds in parallel (issue 16): M independent GPT-2 students of one architecture, trained and
sampled as one batched model whose parameters carry a leading member dimension [M, ...]: every
matmul of `LeanGPT2` becomes a batched matmul over [M, B, T, ...] (PureJaxRL-style vectorised
seeds), so M members pay one member's operator calls. Member m computes the function of the
`CausalLMPolicy` it was built from (`LeanGPT2`'s math), and nothing couples the members:

* the batch is the members' batches concatenated, member-major: rows m * B .. (m + 1) * B - 1
  of a [M * B, T] batch are member m's (`EnsemblePolicy`);
* a loss written as the sum over members of per-member means (`member_mean_weights`) gives each
  member the gradient of its own mean, as alone;
* AdamW is elementwise and all members step together (equal bias-correction counts): one
  optimiser over the stacked parameters is M independent ones;
* gradient clipping is per member, by the member's own norm (`clip_member_grad_norms`);
* randomness is per member: one `torch.Generator` per member for its minibatches
  (`irlhf.algorithms.sft.fit_neural`) and its tokens (`draw`).

tests/policies/test_ensemble.py checks member m against the single run; benchmarks/ensemble.py
measures the speed-up (on 2 CPU threads it depends on the threading regime: see there).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel

from irlhf.policies.causal_lm import CausalLMPolicy, _require, completion_log_probs
from irlhf.policies.lean_gpt2 import LeanGPT2, _attention, _gelu
from irlhf.policies.sampling import Decoding, Steer, draw, mix_uniform
from irlhf.types import ExpertLabels, Sequences

Generators = torch.Generator | Sequence[torch.Generator]
"""One generator for all rows, or one per member (member m's rows drawn from generator m)."""


class _Layer(NamedTuple):
    """One block's stacked parameters for the batched ops: matmul weights (M, in, out) and
    biases (M, 1, out), each layer norm's affine folded into the matmul after it (`_fold`)."""

    attn_weight: Tensor
    attn_bias: Tensor
    proj_weight: Tensor
    proj_bias: Tensor
    fc_weight: Tensor
    fc_bias: Tensor
    mlp_weight: Tensor
    mlp_bias: Tensor


def _fold(
    ln_weight: Tensor, ln_bias: Tensor, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor]:
    """A layer norm's per-member affine (w, b: (M, C)) folded into the matmul after it (W:
    (M, C, out), c: (M, out)): (n w + b) W + c = n (w^T * W) + (b W + c) for the normalised
    n. Returns (w^T * W, b W + c) as (M, C, out) and (M, 1, out): the activations then get no
    pass for the affine, forward or backward, where a separate scale-and-shift costs three."""
    folded_bias = torch.baddbmm(bias.unsqueeze(1), ln_bias.unsqueeze(1), weight)
    return ln_weight.unsqueeze(2) * weight, folded_bias


class EnsembleGPT2(nn.Module):
    """M GPT-2 members with parameters stacked [M, ...] under their Hugging Face names
    (`transformer.h.0.attn.c_attn.weight` of member m is `param(name)[m]`).

    Built from M `GPT2LMHeadModel`s of one configuration that `LeanGPT2` covers (tanh-GELU, no
    dropout, ...). The output layer is tied to the token embedding when the members tie it (the
    default of GPT-2 and of `CausalLMPolicy.tiny`), else stacked on its own."""

    def __init__(self, models: Sequence[GPT2LMHeadModel]) -> None:
        super().__init__()
        _require(len(models) >= 1, "an ensemble needs at least one member")
        first = models[0]
        for model in models:
            _require(isinstance(model, GPT2LMHeadModel), f"not a GPT-2: {type(model).__name__}")
            _require(model.config.to_dict() == first.config.to_dict(), "members differ in config")
            c = model.config
            # no dropout here, in training either: a member must compute what its model would
            _require(max(c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) == 0, "members use dropout")
            was_training = model.training
            _require(LeanGPT2.of(model.eval()) is not None, "a member LeanGPT2 does not cover")
            model.train(was_training)
        self.config: GPT2Config = copy.deepcopy(first.config)
        self.members = len(models)
        self.n_head, self.width = self.config.n_head, self.config.n_embd
        self.eps = self.config.layer_norm_epsilon
        # named_parameters lists a tied output layer once, as transformer.wte.weight
        self.names = [name for name, _ in first.named_parameters()]
        self.stacked = nn.ParameterList(
            [
                nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in models]))
                for n in self.names
            ]
        )
        self._index = {name: i for i, name in enumerate(self.names)}
        self.tied = "lm_head.weight" not in self._index
        self.n_layer = self.config.n_layer

    def param(self, name: str) -> nn.Parameter:
        """The stacked parameter (M, ...) of Hugging Face name `name`."""
        return cast(nn.Parameter, self.stacked[self._index[name]])

    def head(self, action_vocab_size: int) -> tuple[Tensor, Tensor]:
        """The output layer for the first A tokens with the final layer norm's affine folded in
        (`_fold`): weights (M, C, A) and biases (M, 1, A), applied to `normed_states`."""
        name = "transformer.wte.weight" if self.tied else "lm_head.weight"
        weight = self.param(name)[:, :action_vocab_size].transpose(1, 2)  # (M, C, A)
        ln_weight, ln_bias = (
            self.param("transformer.ln_f.weight"),
            self.param("transformer.ln_f.bias"),
        )
        return _fold(ln_weight, ln_bias, weight, torch.zeros_like(weight[:, 0]))

    def final_affine(self, normed: Tensor) -> Tensor:
        """The final layer norm's affine on normalised states (M, B, T, C): the hidden states."""
        shape = (self.members, 1, 1, self.width)
        weight = self.param("transformer.ln_f.weight").view(shape)
        return torch.addcmul(self.param("transformer.ln_f.bias").view(shape), normed, weight)

    def load_member(self, m: int, model: GPT2LMHeadModel) -> None:
        """Copy member m's parameters into `model` (a member-shaped GPT-2), e.g. to save it as
        the run directory of seed m, or to score it with the single-model code."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.param(name)[m])

    # ---- forward ----

    def _layers(self) -> list[_Layer]:
        """Every block's stacked parameters for the batched ops (`_Layer`), made once per
        forward or per sampled batch, not per op."""
        layers = []
        for i in range(self.n_layer):

            def p(name: str, i: int = i) -> Tensor:
                return self.param(f"transformer.h.{i}.{name}")

            attn = _fold(
                p("ln_1.weight"), p("ln_1.bias"), p("attn.c_attn.weight"), p("attn.c_attn.bias")
            )
            fc = _fold(p("ln_2.weight"), p("ln_2.bias"), p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))
            layers.append(
                _Layer(
                    attn_weight=attn[0],
                    attn_bias=attn[1],
                    proj_weight=p("attn.c_proj.weight"),
                    proj_bias=p("attn.c_proj.bias").unsqueeze(1),
                    fc_weight=fc[0],
                    fc_bias=fc[1],
                    mlp_weight=p("mlp.c_proj.weight"),
                    mlp_bias=p("mlp.c_proj.bias").unsqueeze(1),
                )
            )
        return layers

    def _norm(self, x: Tensor) -> Tensor:
        """Layer normalisation without the affine (folded into the next matmul: `_fold`)."""
        return F.layer_norm(x, (self.width,), eps=self.eps)

    def _qkv(self, p: _Layer, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values (M*B, nh, T, hd) of a block's attention for x (M, B, T, C)."""
        M, B, T, C = x.shape
        h = self._norm(x.view(M, B * T, C))
        # GPT-2's Conv1D stores W as (in, out): x (M, N, in) @ W (M, in, out) + b
        qkv = torch.baddbmm(p.attn_bias, h, p.attn_weight)  # (M, B*T, 3C)
        q, k, v = qkv.view(M * B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _finish(self, p: _Layer, x: Tensor, y: Tensor) -> Tensor:
        """x (M, B, T, C) + projection of the heads' outputs y (M*B, nh, T, hd), then the MLP."""
        M, B, T, C = x.shape
        y = y.transpose(1, 2).reshape(M, B * T, C)  # heads side by side
        x = x + torch.baddbmm(p.proj_bias, y, p.proj_weight).view(M, B, T, C)
        h = self._norm(x.view(M, B * T, C))
        h = _gelu(torch.baddbmm(p.fc_bias, h, p.fc_weight))
        return x + torch.baddbmm(p.mlp_bias, h, p.mlp_weight).view(M, B, T, C)

    def _block(
        self, p: _Layer, x: Tensor, cache: Tensor | None = None, queries_from: int = 0
    ) -> Tensor:
        """`LeanGPT2._block` for x (M, B, T, C): with a cache (2, M*B, nh, T_max, hd) the keys
        and values go to positions 0..T-1; with `queries_from` = s only positions s.. are
        output (M, B, T - s, C)."""
        q, k, v = self._qkv(p, x)
        if cache is not None:
            T = x.shape[2]
            cache[0, :, :, :T], cache[1, :, :, :T] = k, v
        if queries_from:
            q, x = q[:, :, queries_from:], x[:, :, queries_from:]
        return self._finish(p, x, _attention(q, k, v, causal=True))

    def _embed(self, tokens: Tensor) -> Tensor:
        """Token + position embeddings (M, B, T, C) of tokens (M, B, T) at positions 0..T-1;
        member m's rows read member m's tables (one lookup in the (M * V, C) table)."""
        M, B, T = tokens.shape
        wte = self.param("transformer.wte.weight").reshape(M * self.config.vocab_size, self.width)
        x = F.embedding(tokens + self._offsets(tokens.device).view(M, 1, 1), wte)
        return x + self.param("transformer.wpe.weight")[:, :T].unsqueeze(1)

    def _offsets(self, device: torch.device) -> Tensor:
        """(M,): where member m's rows start in the (M * V, C) token table."""
        return torch.arange(self.members, device=device) * self.config.vocab_size

    def normed_states(self, tokens: Tensor, start: int = 0, end: int | None = None) -> Tensor:
        """(M, B, end - start, C): the last hidden states at positions start..end-1 of tokens
        (M, B, T) before the final layer norm's affine (`final_affine` gives the hidden
        states, `head` the logits). As `LeanGPT2.hidden_states`, nothing after end - 1 is
        computed and the last block computes queries and MLP only at start..end-1 (no prompt
        sharing)."""
        end = tokens.shape[2] if end is None else end
        x = self._embed(tokens[:, :, :end])  # (M, B, end, C)
        *lower, last = self._layers()
        for p in lower:
            x = self._block(p, x)
        x = self._block(last, x, queries_from=start)  # (M, B, end - start, C)
        return self._norm(x)

    def _decode_block(self, p: _Layer, x: Tensor, cache: Tensor, position: int) -> Tensor:
        """`LeanGPT2._decode_block` for one new token per row, x (M, B, C)."""
        M, B, C = x.shape
        nh, hd = self.n_head, C // self.n_head
        S = position + 1
        h = self._norm(x)
        qkv = torch.baddbmm(p.attn_bias, h, p.attn_weight).view(M * B, 3, nh, hd)
        cache[:, :, :, position] = qkv[:, 1:].transpose(0, 1)  # (2, M*B, nh, hd)
        keys = cache[0, :, :, :S].reshape(M * B * nh, S, hd)  # views of the cache
        values = cache[1, :, :, :S].reshape(M * B * nh, S, hd)
        q = (qkv[:, 0] * (1.0 / math.sqrt(hd))).view(M * B * nh, 1, hd)
        scores = torch.bmm(q, keys.transpose(1, 2))  # (M*B*nh, 1, S)
        y = torch.bmm(scores.softmax(dim=-1), values).view(M, B, C)
        x = x + torch.baddbmm(p.proj_bias, y, p.proj_weight)
        h = self._norm(x)
        h = _gelu(torch.baddbmm(p.fc_bias, h, p.fc_weight))
        return x + torch.baddbmm(p.mlp_bias, h, p.mlp_weight)

    def sample(
        self,
        action_vocab_size: int,
        prompts: Tensor,
        C: int,
        generator: Generators,
        decoding: Decoding,
        steer: Steer | None = None,
    ) -> tuple[Tensor, Tensor]:
        """`LeanGPT2.sample` for prompts (M, B, P), every member at once (call under inference
        mode). Returns the new tokens and their log-probs, each (M * B, C), member-major;
        `steer` sees all M * B rows."""
        M, B, P = prompts.shape
        nh, width = self.n_head, self.width
        head, head_bias = self.head(action_vocab_size)  # (M, C, A), (M, 1, A)
        layers = self._layers()
        caches = [head.new_empty((2, M * B, nh, P + C, width // nh)) for _ in layers]
        wte = self.param("transformer.wte.weight").reshape(-1, width)  # (M * V, C)
        wpe = self.param("transformer.wpe.weight").unsqueeze(1)  # (M, 1, T_max, C)
        offsets = self._offsets(prompts.device).repeat_interleave(B)  # (M * B,)
        tokens: list[Tensor] = []
        log_probs: list[Tensor] = []
        x = self._embed(prompts)  # (M, B, P, C): the prompts in one pass
        for p, cache in zip(layers, caches, strict=True):
            x = self._block(p, x, cache)
        x = x[:, :, -1]  # (M, B, C)
        for step in range(C):
            if step:  # the tokens drawn last step, at position P + step - 1
                x = F.embedding(tokens[-1] + offsets, wte).view(M, B, width)
                x = x + wpe[:, :, P + step - 1]
                for p, cache in zip(layers, caches, strict=True):
                    x = self._decode_block(p, x, cache, P + step - 1)
            logits = torch.baddbmm(head_bias, self._norm(x), head).view(M * B, -1)  # (M*B, A)
            token, log_prob = draw(logits.float(), generator, decoding)
            if steer is not None:
                token = steer(step, token)
            tokens.append(token)
            log_probs.append(log_prob)
        if not tokens:
            empty = prompts.new_empty((M * B, 0))
            return empty, empty.float()
        return torch.stack(tokens, dim=1), torch.stack(log_probs, dim=1)


class EnsemblePolicy:
    """The ensemble as one policy over member-major batches: a batch [M * B, T] holds member
    m's B rows at m * B .. (m + 1) * B - 1, and every score comes back in that order, so that a
    training loop written for one `CausalLMPolicy` trains all members (its loss as the sum over
    members of per-member means: `member_mean_weights`). Sampling takes one generator per member.
    """

    def __init__(
        self, ensemble: EnsembleGPT2, action_vocab_size: int, act_epsilon: float = 0.0
    ) -> None:
        V = ensemble.config.vocab_size
        _require(1 <= action_vocab_size <= V, f"action_vocab_size must be in [1, {V}]")
        _require(0 <= act_epsilon < 1, f"act_epsilon must be in [0, 1), got {act_epsilon}")
        self.model = ensemble
        self.members = ensemble.members
        self.vocab_size = V
        self.action_vocab_size = action_vocab_size
        self.act_epsilon = act_epsilon

    @staticmethod
    def of(policies: Sequence[CausalLMPolicy]) -> EnsemblePolicy:
        """The ensemble of GPT-2 policies of one architecture, action vocabulary and acting
        error; member m starts with policies[m]'s parameters (copied: the policies are not
        trained by training the ensemble; `member` copies a member back)."""
        _require(len(policies) >= 1, "an ensemble needs at least one member")
        first = policies[0]
        for p in policies:
            _require(p.action_vocab_size == first.action_vocab_size, "action vocabularies differ")
            _require(p.act_epsilon == first.act_epsilon, "acting errors differ")
        models = [cast(GPT2LMHeadModel, p.model) for p in policies]
        ensemble = EnsembleGPT2(models).to(first.device)
        return EnsemblePolicy(ensemble, first.action_vocab_size, first.act_epsilon)

    @staticmethod
    def tiny(seeds: Sequence[int], vocab_size: int, **kwargs) -> EnsemblePolicy:
        """Members `CausalLMPolicy.tiny(vocab_size, seed=s, arch="gpt2", **kwargs)` for s in
        `seeds`: member m has the initial weights of the single run with seed seeds[m]."""
        return EnsemblePolicy.of(
            [CausalLMPolicy.tiny(vocab_size, seed=s, arch="gpt2", **kwargs) for s in seeds]
        )

    def member(self, m: int) -> CausalLMPolicy:
        """Member m as a standalone `CausalLMPolicy` (a copy of its current parameters)."""
        with torch.random.fork_rng(devices=[]):  # its random initialisation is overwritten
            model = GPT2LMHeadModel(self.model.config)
        dtype = self.model.param("transformer.wte.weight").dtype
        cast(nn.Module, model).to(self.device, dtype)  # transformers' wrapped `to` is mistyped
        self.model.load_member(m, model)
        return CausalLMPolicy(model.eval(), self.action_vocab_size, self.act_epsilon)

    # ---- torch plumbing ----

    @property
    def device(self) -> torch.device:
        return self.model.param("transformer.wte.weight").device

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def train(self, mode: bool = True) -> EnsemblePolicy:
        self.model.train(mode)
        return self

    def eval(self) -> EnsemblePolicy:
        return self.train(False)

    def to(self, device: torch.device | str) -> EnsemblePolicy:
        self.model.to(device)
        return self

    def _members(self, x: Tensor) -> Tensor:
        """A member-major batch (M * B, ...) as (M, B, ...)."""
        M = self.members
        _require(x.shape[0] % M == 0, f"batch of {x.shape[0]} rows is not {M} members' batches")
        return x.view(M, x.shape[0] // M, *x.shape[1:])

    # ---- scoring (as CausalLMPolicy) ----

    def action_logits(
        self, seqs: Sequences, start: int = 0, end: int | None = None, hidden: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (M * B, end - start, A) at positions start..end-1 of a member-major batch
        (`CausalLMPolicy.action_logits`), and with `hidden` the last hidden states."""
        T = seqs.length
        end = T if end is None else end
        _require(0 <= start < end <= T, f"need 0 <= start < end <= {T}, got {start}, {end}")
        mask = seqs.prompt_mask | seqs.completion_mask
        # right padding only (as LeanGPT2): causal attention keeps real tokens from padding
        _require(
            bool(mask[:, 0].all()) and not bool((mask[:, 1:] & ~mask[:, :-1]).any()),
            "the ensemble takes right-padded rows only",
        )
        normed = self.model.normed_states(self._members(seqs.tokens), start, end)  # (M, B, T', C)
        M, B, Tq, C = normed.shape
        head, head_bias = self.model.head(self.action_vocab_size)  # (M, C, A), (M, 1, A)
        logits = torch.baddbmm(head_bias, normed.reshape(M, B * Tq, C), head).view(M * B, Tq, -1)
        if self.act_epsilon:
            logits = mix_uniform(logits.log_softmax(dim=-1), self.act_epsilon)
        if not hidden:
            return logits, None
        return logits, self.model.final_affine(normed).view(M * B, Tq, C)

    def next_token_logits(self, seqs: Sequences) -> Tensor:
        """(M * B, T, A): position t holds the logits of token t given tokens < t."""
        logits = self.action_logits(seqs)[0]
        return torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :-1]], dim=1)

    def log_probs(self, seqs: Sequences) -> Tensor:
        """(M * B, T): log pi_m(token_t | tokens_<t) at completion positions, 0 elsewhere."""
        return completion_log_probs(self, seqs)

    # ---- generation ----

    def sample(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        generator: Generators,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        steer: Steer | None = None,
    ) -> Sequences:
        """Continue member-major prompts [M * B, P] (`CausalLMPolicy.sample`); with one
        generator per member, member m's rows are drawn from generator m."""
        decoding = Decoding(temperature, top_k, top_p, greedy, self.act_epsilon)
        return self._generate(prompts, max_new_tokens, generator, decoding, steer)[0]

    def sample_with_log_probs(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        generator: Generators,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
    ) -> tuple[Sequences, Tensor]:
        """`CausalLMPolicy.sample_with_log_probs` for member-major prompts [M * B, P]."""
        decoding = Decoding(temperature, top_k, top_p, greedy, self.act_epsilon)
        return self._generate(prompts, max_new_tokens, generator, decoding, None)

    def _generate(
        self,
        prompts: Tensor,
        C: int,
        generator: Generators,
        decoding: Decoding,
        steer: Steer | None,
    ) -> tuple[Sequences, Tensor]:
        _require(
            prompts.dim() == 2 and prompts.shape[1] >= 1 and prompts.dtype == torch.long,
            f"prompts must be [M * B, P >= 1] long, got {tuple(prompts.shape)} {prompts.dtype}",
        )
        P = prompts.shape[1]
        context = self.model.config.n_positions
        _require(0 <= C <= context - P, f"{P} + {C} new tokens do not fit the context {context}")
        prompts = prompts.to(self.device)
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.inference_mode():
                args = (self._members(prompts), C, generator, decoding, steer)
                completion, new_log_probs = self.model.sample(self.action_vocab_size, *args)
        finally:
            self.model.train(was_training)
        seqs = Sequences.from_prompt_and_completion(prompts, completion.clone())
        return seqs, F.pad(new_log_probs.clone(), (P, 0))


def member_major(parts: Sequence[ExpertLabels]) -> ExpertLabels:
    """The members' label batches (equal sizes, one per member) as one member-major batch: the
    data an `EnsemblePolicy` trains on (`irlhf.algorithms.sft.fit_neural`)."""
    _require(len({p.sequences.batch_size for p in parts}) == 1, "members' batches differ in size")

    def cat(field: Callable[[ExpertLabels], Tensor | None]) -> Tensor:
        return torch.cat([cast(Tensor, field(p)) for p in parts])

    seqs = Sequences(
        cat(lambda p: p.sequences.tokens),
        cat(lambda p: p.sequences.prompt_mask),
        cat(lambda p: p.sequences.completion_mask),
    )
    if parts[0].soft:
        return ExpertLabels(seqs, cat(lambda p: p.mask), probs=cat(lambda p: p.probs))
    return ExpertLabels(seqs, cat(lambda p: p.mask), actions=cat(lambda p: p.actions))


def member_mean_weights(mask: Tensor, members: int) -> Tensor:
    """Weights w (M * B, ...) for a member-major mask such that M * sum(w x) / sum(w) is the
    sum over members of member m's mean of x over its masked positions: w = mask / n_m, with n_m
    the number of member m's masked positions (so sum(w) = M). Pass w as the `mask` of a loss
    that takes a masked mean and multiply the loss by M: every member then gets the gradient of
    its own mean, exactly as alone."""
    rows = mask.reshape(members, -1)  # (M, B * ...)
    counts = rows.sum(dim=1, keepdim=True, dtype=torch.float64).clamp_min(1.0)  # (M, 1)
    return (rows / counts).view(mask.shape)


def clip_member_grad_norms(params: Sequence[Tensor], max_norm: float, members: int) -> Tensor:
    """`torch.nn.utils.clip_grad_norm_` per member: member m's gradients (slice m of every
    stacked parameter) are scaled by min(1, max_norm / (||g_m|| + 1e-6)), ||g_m|| the norm of
    member m's gradients alone. Returns the norms before clipping (M,)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(members)
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(members, -1), dim=1) for g in grads])
    total = torch.linalg.vector_norm(norms, dim=0)  # (M,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view((members,) + (1,) * (g.dim() - 1)).to(g.dtype))
    return total
