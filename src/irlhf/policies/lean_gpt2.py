"""GPT-2's forward and sampler written out (as nanoGPT's) over a Hugging Face GPT-2's own
parameters: the fast path that `CausalLMPolicy` and the neural reward model take for a GPT-2.

Why (issue 7; the README's Performance section measures it against TRL and `generate`): the
same function, same weights and gradients as the Hugging Face forward, but the tanh-GELU through
a sigmoid (`_GeluTanh`: a tanh costs more than a sigmoid on CPU), attention as batched matmuls
for short sequences (`_attention`), and only the work that the positions asked for depend on:
logits and the last block's queries and MLP only at those positions, nothing after the last of
them, and a prompt shared by several rows (DPO's pairs, RLOO's samples) once
(`LeanGPT2.hidden_states`); and a sampler with a preallocated KV cache and a few dozen tensor ops
per token instead of `generate`'s machinery. Anything it does not cover (other architectures,
active dropout, left padding, GPT-2 variants) takes the Hugging Face forward: `LeanGPT2.of`
returns None for it.
"""

from __future__ import annotations

import functools
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GPT2LMHeadModel, GPT2Model
from transformers.models.gpt2.modeling_gpt2 import GPT2Block

from irlhf.policies.sampling import Decoding, Steer, draw


class LeanGPT2:
    """GPT-2 (Radford et al. 2019) written out over a `GPT2LMHeadModel`'s own parameters, as
    nanoGPT's `model.py`: the same function as the Hugging Face forward (to float rounding) and
    the same parameters, so gradients land where the optimiser expects them.

    Covers the configurations `CausalLMPolicy.tiny` builds and the usual checkpoints: tanh-GELU,
    1/sqrt(d) attention scaling, no cross-attention; no dropout in training (p = 0, or eval);
    an attention mask of ones followed by padding (right padding: causal attention already keeps
    real tokens from seeing it). `of` returns None otherwise.
    """

    def __init__(self, model: GPT2LMHeadModel | GPT2Model) -> None:
        self.transformer = model.transformer if isinstance(model, GPT2LMHeadModel) else model
        # None for a bare GPT2Model backbone
        self.lm_head: nn.Linear | None = getattr(model, "lm_head", None)
        config = model.config
        self.n_head, self.width = config.n_head, config.n_embd

    @staticmethod
    def of(model: nn.Module, attention_mask: Tensor | None = None) -> LeanGPT2 | None:
        """The lean forward of a `GPT2LMHeadModel` or a bare `GPT2Model` (a reward model's
        backbone), or None when it would not compute what the Hugging Face forward does."""
        if not isinstance(model, (GPT2LMHeadModel, GPT2Model)):
            return None
        c = model.config
        dropout = max(c.resid_pdrop, c.embd_pdrop, c.attn_pdrop)
        if (
            c.activation_function not in ("gelu_new", "gelu_pytorch_tanh")
            or not c.scale_attn_weights
            or c.scale_attn_by_inverse_layer_idx
            or c.reorder_and_upcast_attn
            or c.add_cross_attention
            or (model.training and dropout > 0)
        ):
            return None
        if attention_mask is not None and attention_mask.shape[1] > 1:
            # each row: ones, then only padding (a later real token would need a mask)
            if bool((attention_mask[:, 1:] & ~attention_mask[:, :-1]).any()):
                return None
            if not bool(attention_mask[:, 0].all()):
                return None
        return LeanGPT2(model)

    def _blocks(self) -> list[GPT2Block]:
        return cast("list[GPT2Block]", list(self.transformer.h))

    def _qkv(self, block: GPT2Block, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values (B, nh, T, hd) of a block's attention for x (B, T, C)."""
        B, T, C = x.shape
        ln = block.ln_1
        h = F.layer_norm(x, (C,), ln.weight, ln.bias, ln.eps)
        c_attn = block.attn.c_attn
        qkv = torch.addmm(c_attn.bias, h.view(B * T, C), c_attn.weight)  # (B*T, 3C)
        q, k, v = qkv.view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _finish(self, block: GPT2Block, x: Tensor, y: Tensor) -> Tensor:
        """The rest of a block after attention: x (B, T, C) + output projection of the heads'
        outputs y (B, nh, T, hd), then the MLP with its residual."""
        B, T, C = x.shape
        y = y.transpose(1, 2).reshape(B * T, C)  # (B*T, C), heads side by side
        attn, mlp = block.attn, block.mlp
        x = x + torch.addmm(attn.c_proj.bias, y, attn.c_proj.weight).view(B, T, C)
        h = F.layer_norm(x, (C,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
        h = _gelu(torch.addmm(mlp.c_fc.bias, h.view(B * T, C), mlp.c_fc.weight))
        return x + torch.addmm(mlp.c_proj.bias, h, mlp.c_proj.weight).view(B, T, C)

    def _block(
        self,
        block: GPT2Block,
        x: Tensor,
        cache: tuple[Tensor, Tensor] | None = None,
        position: int = 0,
        queries_from: int = 0,
    ) -> Tensor:
        """One transformer block on x (B, T, C). With a cache (K, V each (B, nh, T_max, hd)),
        the block's keys and values are written at `position` onwards and attention reads the
        cache up to the last of them. With `queries_from` = s (no cache), keys and values are
        computed at all T positions but queries, attention output and MLP only at s..T-1: the
        output is (B, T - s, C), the block's output at those positions."""
        q, k, v = self._qkv(block, x)  # (B, nh, T, hd)
        if cache is not None:
            keys, values = cache
            end = position + x.shape[1]
            keys[:, :, position:end], values[:, :, position:end] = k, v
            if end - position == 1:  # one new token attends to everything cached so far
                return self._finish(block, x, _attention(q, keys[:, :, :end], values[:, :, :end]))
        if queries_from:  # the last T - s queries; _attention's causal mask is offset for them
            q, x = q[:, :, queries_from:], x[:, queries_from:]
        return self._finish(block, x, _attention(q, k, v, causal=True))

    def _shared_prompt_block(
        self,
        block: GPT2Block,
        prompts: Tensor,
        rest: Tensor,
        inverse: Tensor,
        queries_from: int = 0,
    ) -> tuple[Tensor | None, Tensor]:
        """One block for rows that share prompts: the U distinct prompts' states (U, P, C) and
        every row's states after its prompt (B, L, C), row b's prompt being prompts[inverse[b]].
        Each row attends to its prompt's keys and values, then causally to its own. With
        `queries_from` = s, as `_block`: outputs at positions s.. only (the prompts' output is
        None when s >= P)."""
        P = prompts.shape[1]
        qp, kp, vp = self._qkv(block, prompts)  # (U, nh, P, hd)
        qr, kr, vr = self._qkv(block, rest)  # (B, nh, L, hd)
        # index_select: its backward is an index_add (fast); indexing's is an accumulating
        # index_put, ~4x slower here
        keys = torch.cat([kp.index_select(0, inverse), kr], dim=2)  # (B, nh, P + L, hd)
        values = torch.cat([vp.index_select(0, inverse), vr], dim=2)
        skip = max(queries_from - P, 0)
        if skip:
            qr, rest = qr[:, :, skip:], rest[:, skip:]
        rest = self._finish(block, rest, _attention(qr, keys, values, causal=True))
        if queries_from >= P:
            return None, rest
        if queries_from:
            qp, prompts = qp[:, :, queries_from:], prompts[:, queries_from:]
        return self._finish(block, prompts, _attention(qp, kp, vp, causal=True)), rest

    def _final_norm(self, x: Tensor) -> Tensor:
        ln = self.transformer.ln_f
        return F.layer_norm(x, (self.width,), ln.weight, ln.bias, ln.eps)

    def hidden_states(
        self, tokens: Tensor, start: int = 0, end: int | None = None, prompt_length: int = 0
    ) -> Tensor:
        """(B, end - start, C): the last hidden states (after the final layer norm) at
        positions start..end-1 of tokens (B, T); end defaults to T.

        Only what those positions depend on is computed (issue 7), with the values of the full
        forward (to float rounding; tests/policies/test_lean_gpt2.py):
        * Attention is causal, so positions >= end influence nothing before them and are dropped
          at the input.
        * The last block's output elsewhere than start..end-1 feeds nothing but discarded
          positions, so that block computes keys and values at 0..end-1 but queries, attention
          output and MLP only at start..end-1. A training forward that scores only completion
          tokens thereby skips the last block's work at prompt positions, which a full forward
          (Hugging Face's, TRL's) computes and the loss then ignores.
        * With `prompt_length` = P >= 1 (every row's first P tokens are its prompt), rows with
          the same prompt share its computation: a prompt's states depend on the prompt alone,
          so DPO's chosen and rejected completions of one prompt, or RLOO's k samples of one
          prompt, need them once, not once per row (`_shared_prompt_block`).
        """
        B = tokens.shape[0]
        end = tokens.shape[1] if end is None else end
        tokens = tokens[:, :end]
        wte, wpe = self.transformer.wte, self.transformer.wpe.weight
        *lower, last = self._blocks()
        if 1 <= prompt_length < end and B > 1:
            prompts, inverse = torch.unique(tokens[:, :prompt_length], dim=0, return_inverse=True)
            # worth its extra operator calls only when prompts repeat a lot (a few repeats,
            # as in minibatches drawn with replacement, cost more in calls than they save)
            if 4 * len(prompts) <= 3 * B:
                P = prompt_length
                xp, xr = wte(prompts) + wpe[:P], wte(tokens[:, P:]) + wpe[P:end]
                for block in lower:
                    xp, xr = self._shared_prompt_block(block, xp, xr, inverse)
                xp, xr = self._shared_prompt_block(last, xp, xr, inverse, queries_from=start)
                x = xr if xp is None else torch.cat([xp.index_select(0, inverse), xr], dim=1)
                return self._final_norm(x)  # (B, end - start, C)
        x = wte(tokens) + wpe[:end]  # (B, end, C)
        for block in lower:
            x = self._block(block, x)
        x = self._block(last, x, queries_from=start)  # (B, end - start, C)
        return self._final_norm(x)

    def _decode_block(self, block: GPT2Block, x: Tensor, cache: Tensor, position: int) -> Tensor:
        """`_block` for one new token x (B, C) at `position`, written out for the sampler's
        inner loop (every operator call counts at these sizes): its key and value go into the
        cache (2, B, nh, T_max, hd) with one copy, and the query attends to positions
        0..position without a mask."""
        B, C = x.shape
        nh, hd = self.n_head, C // self.n_head
        S = position + 1
        h = F.layer_norm(x, (C,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        attn = block.attn
        qkv = torch.addmm(attn.c_attn.bias, h, attn.c_attn.weight).view(B, 3, nh, hd)
        cache[:, :, :, position] = qkv[:, 1:].transpose(0, 1)  # (2, B, nh, hd)
        keys = cache[0, :, :, :S].reshape(B * nh, S, hd)  # views of the cache
        values = cache[1, :, :, :S].reshape(B * nh, S, hd)
        q = (qkv[:, 0] * (1.0 / math.sqrt(hd))).view(B * nh, 1, hd)
        scores = torch.bmm(q, keys.transpose(1, 2))  # (B*nh, 1, S)
        y = torch.bmm(scores.softmax(dim=-1), values).view(B, C)  # heads side by side
        x = x + torch.addmm(attn.c_proj.bias, y, attn.c_proj.weight)
        h = F.layer_norm(x, (C,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
        mlp = block.mlp
        h = _gelu(torch.addmm(mlp.c_fc.bias, h, mlp.c_fc.weight))
        return x + torch.addmm(mlp.c_proj.bias, h, mlp.c_proj.weight)

    def sample(
        self,
        action_vocab_size: int,
        prompts: Tensor,
        C: int,
        generator: torch.Generator,
        decoding: Decoding,
        steer: Steer | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Ancestral sampling with a preallocated KV cache (call under inference mode).
        Returns the new tokens (B, C) and their log-probs (B, C); `steer` as in
        `CausalLMPolicy.sample`."""
        B, P = prompts.shape
        nh, width = self.n_head, self.width
        wte, wpe = self.transformer.wte, self.transformer.wpe.weight
        head = cast(nn.Linear, self.lm_head).weight[:action_vocab_size]  # (A, C)
        blocks = self._blocks()
        # per block: keys and values (2, B, nh, T_max, hd) in one tensor
        caches = [wpe.new_empty((2, B, nh, P + C, width // nh)) for _ in blocks]
        tokens: list[Tensor] = []
        log_probs: list[Tensor] = []
        x = wte(prompts) + wpe[:P]  # (B, P, C): the prompt in one pass
        for block, cache in zip(blocks, caches, strict=True):
            x = self._block(block, x, (cache[0], cache[1]), 0)
        x = x[:, -1]  # (B, C)
        for step in range(C):
            if step:  # the token drawn last step, at position P + step - 1
                x = wte(tokens[-1]) + wpe[P + step - 1]  # (B, C)
                for block, cache in zip(blocks, caches, strict=True):
                    x = self._decode_block(block, x, cache, P + step - 1)
            logits = F.linear(self._final_norm(x), head)  # (B, A)
            token, log_prob = draw(logits.float(), generator, decoding)
            if steer is not None:
                token = steer(step, token)
            tokens.append(token)
            log_probs.append(log_prob)
        if not tokens:
            empty = prompts.new_empty((B, 0))
            return empty, empty.float()
        return torch.stack(tokens, dim=1), torch.stack(log_probs, dim=1)


_GELU_A = 2.0 * math.sqrt(2.0 / math.pi)
_GELU_B = _GELU_A * 0.044715


@functools.lru_cache(maxsize=16)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-dim tensor holding `value`, made once (an operator call saved per use)."""
    with torch.inference_mode(False):  # cached: a normal tensor, usable in training later
        return torch.full((), value, dtype=dtype, device=device)


class _GeluTanh(torch.autograd.Function):
    """GPT-2's tanh-approximate GELU, 0.5 x (1 + tanh(z)) with z = sqrt(2/pi) (x + 0.044715 x^3),
    computed as the identical x sigmoid(u), u = 2z = x (A + B x^2) (since 1 + tanh(z) =
    2 sigmoid(2z)), with its derivative written out:

        d/dx = s + s (1 - s) x u'(x),  s = sigmoid(u),  x u'(x) = x (A + 3B x^2) = 3 (u - 2A x / 3)

    Why (issue 7): on the benchmark's CPU torch's tanh costs ~3.5x its sigmoid (4.4 vs 1.3 ms on
    a [1280, 512] tensor, 2 threads), and `F.gelu(approximate="tanh")` and its backward each
    evaluate a tanh per element; here the forward is four cheap passes over the tensor and the
    backward four (it keeps u and s), about half the time. Equal to `F.gelu(x,
    approximate="tanh")` and its gradient to float rounding (tests/policies/test_lean_gpt2.py)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        a = _scalar(_GELU_A, x.dtype, x.device)
        u = torch.addcmul(a, x, x, value=_GELU_B).mul_(x)  # u = x (A + B x^2)
        s = torch.sigmoid(u)
        ctx.save_for_backward(x, u, s)
        return x * s

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # u and s are saved outside the graph: a backward that builds one (create_graph=True,
        # grad mode on) would silently miss second-order terms, so it raises instead
        # (`once_differentiable` raises only when the incoming gradient requires grad)
        if torch.is_grad_enabled():
            raise RuntimeError("the lean GPT-2's GELU supports first derivatives only")
        x, u, s = ctx.saved_tensors
        w = torch.add(u, x, alpha=-2.0 * _GELU_A / 3.0)  # x u'(x) / 3
        slope = torch.addcmul(s, s, s, value=-1.0)  # s (1 - s)
        return torch.addcmul(s, slope, w, value=3.0).mul_(grad)


def _gelu(x: Tensor) -> Tensor:
    """Tanh-approximate GELU (`_GeluTanh`); without autograd, its forward as plain ops."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _GeluTanh.apply(x)
    a = _scalar(_GELU_A, x.dtype, x.device)
    return x * torch.addcmul(a, x, x, value=_GELU_B).mul_(x).sigmoid_()


_FLASH_ABOVE = 1 << 22
"""Attention score elements (B * heads * T * S) above which `_attention` uses the flash kernel."""


def _attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(d) + causal mask) v for q (B, nh, T, hd), k and v (B, nh, S, hd);
    with T < S the queries are the last T of the S positions (the causal mask is offset).

    Short sequences take the textbook ops: measured on 2 CPU threads at the sizes used here
    (T = 40..72), torch's flash-attention CPU kernel took about twice as long, forward and
    backward, as these matmuls; long ones (large score tensors) take the flash kernel. The
    scaling and the mask ride on the first matmul (`baddbmm`: mask + scale * q k^T in one
    kernel, instead of two more passes over the scores forward and backward)."""
    B, nh, T, hd = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(hd)
    if B * nh * T * S > _FLASH_ABOVE:
        if causal and T != S:  # SDPA's is_causal aligns the queries to the first positions
            mask = _causal_mask(T, S, q.dtype, q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    q3, v3 = q.reshape(B * nh, T, hd), v.reshape(B * nh, S, hd)
    k3t = k.reshape(B * nh, S, hd).transpose(1, 2)  # (B*nh, hd, S)
    if causal:
        scores = torch.baddbmm(_causal_mask(T, S, q.dtype, q.device), q3, k3t, alpha=scale)
    else:
        scores = torch.bmm(q3, k3t).mul_(scale)  # (B*nh, T, S); bmm's output is not saved
    return torch.bmm(scores.softmax(dim=-1), v3).view(B, nh, T, hd)


@functools.lru_cache(maxsize=64)
def _causal_mask(T: int, S: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(T, S): 0 where query t (the last T of S positions) may attend, -inf elsewhere."""
    with torch.inference_mode(False):  # cached: a normal tensor, usable in training later
        allowed = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)
        return torch.zeros(T, S, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
