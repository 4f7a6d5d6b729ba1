"""A neural policy: any Hugging Face causal LM, seeing only tokens.

The same class serves as demonstrator, student, reference and RLHF policy: tiny GPT-2 or LLaMA
models built locally from a config (`CausalLMPolicy.tiny`), or a checkpoint on disk
(`CausalLMPolicy.from_pretrained`: safetensors only, never pickle, never the hub). The model's
vocabulary may hold prompt-only tokens; only ids < `action_vocab_size` are actions, so every
distribution below is over those ids alone.

Alignment follows `irlhf.types`: position t is about token t given tokens < t. Sampling is plain
ancestral sampling with a KV cache (one model call per new token) and the usual temperature, top-k
and nucleus (top-p, Holtzman et al. 2020) filters, drawing each token by inverting the CDF with
one uniform number per row. The log-prob gather is a fused `cross_entropy` per token (log-softmax
and gather in one kernel, as TRL's `selective_log_softmax` avoids a separate [B, T, V] pass).

Speed (issue 7): a GPT-2 runs through `_LeanGPT2`, its forward written out (as nanoGPT's) over
the Hugging Face module's own parameters — the same function, same weights and gradients, but
the tanh-GELU through a sigmoid (`_GeluTanh`: a tanh costs more than a sigmoid on CPU),
attention as batched matmuls for short sequences (`_attention`), and only the work that the
positions asked for depend on: logits and the last block's queries and MLP only at those
positions, nothing after the last of them, and a prompt shared by several rows (DPO's pairs,
RLOO's samples) once (`_LeanGPT2.hidden_states`); and a sampler with a preallocated KV cache and
a few dozen tensor ops per token instead of `generate`'s machinery. Anything it does not cover
(other architectures, active dropout, left padding, GPT-2 variants) takes the Hugging Face
forward.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    LlamaConfig,
    PreTrainedModel,
)

from irlhf.types import Sequences

_META_FILE = "irlhf.json"


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def default_device() -> torch.device:
    """cuda if available, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class CausalLMPolicy:
    """pi(token_t | tokens_<t) from a causal LM, restricted to the first `action_vocab_size` ids."""

    def __init__(self, model: PreTrainedModel, action_vocab_size: int | None = None) -> None:
        vocab_size = model.config.vocab_size
        action_vocab_size = vocab_size if action_vocab_size is None else action_vocab_size
        _require(
            1 <= action_vocab_size <= vocab_size,
            f"action_vocab_size must be in [1, {vocab_size}], got {action_vocab_size}",
        )
        self.model = model
        self.vocab_size = vocab_size
        self.action_vocab_size = action_vocab_size

    # ---- construction and persistence ----

    @staticmethod
    def tiny(
        vocab_size: int,
        action_vocab_size: int | None = None,
        n_layer: int = 2,
        n_embd: int = 128,
        n_head: int = 4,
        max_length: int = 256,
        arch: str = "gpt2",
        seed: int = 0,
    ) -> CausalLMPolicy:
        """A small randomly initialised GPT-2 or LLaMA (MLP width 4 * n_embd), dropout 0.

        No special tokens: ids mean whatever the world says. The global RNG is left untouched.
        """
        if arch == "gpt2":
            cls, extra = GPT2Config, {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        elif arch == "llama":
            cls, extra = LlamaConfig, {"intermediate_size": 4 * n_embd, "attention_dropout": 0.0}
        else:
            raise ValueError(f"arch must be 'gpt2' or 'llama', got {arch!r}")
        # no bos/eos/pad: the defaults (50256; 1 and 2 for LLaMA) would make `generate` stop early
        config = cls(
            vocab_size=vocab_size,
            hidden_size=n_embd,
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            max_position_embeddings=max_length,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            **extra,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config)
        return CausalLMPolicy(model, action_vocab_size)

    @staticmethod
    def from_pretrained(path: str | Path, action_vocab_size: int | None = None) -> CausalLMPolicy:
        """Load a directory written by `save` (or any `save_pretrained`), from safetensors only.

        action_vocab_size: overrides the one in irlhf.json; without either, the whole vocabulary.
        Raises a one-line ValueError for a missing, malformed or pickle-only directory.
        """
        path = Path(path)
        where, expected = (
            f"policy directory {path}",
            "expected a causal LM saved by save_pretrained",
        )
        _require(path.is_dir(), f"{where} does not exist; {expected}")
        _require((path / "config.json").is_file(), f"{where} has no config.json; {expected}")
        pickles = sorted(p.name for p in path.glob("*.bin"))
        found = (
            f"only pickle weights {pickles}, which are never loaded" if pickles else "no weights"
        )
        _require(any(path.glob("*.safetensors")), f"{where} has no *.safetensors ({found})")
        try:
            model, info = AutoModelForCausalLM.from_pretrained(
                path, use_safetensors=True, local_files_only=True, output_loading_info=True
            )
        except Exception as e:  # safetensors, JSON and transformers errors alike
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{where} could not be loaded: {reason}") from e
        # transformers fills missing weights with random ones; a loaded policy must not be random
        bad = sorted(info["missing_keys"]) + sorted(map(str, info["mismatched_keys"]))
        _require(not bad and not info["error_msgs"], f"{where} lacks weights, e.g. {bad[:3]}")
        meta_file = path / _META_FILE
        if action_vocab_size is None and meta_file.is_file():
            try:
                action_vocab_size = int(json.loads(meta_file.read_text())["action_vocab_size"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{meta_file} is malformed: {e!r}") from e
        return CausalLMPolicy(model, action_vocab_size)

    def save(self, path: str | Path) -> None:
        """config.json + model.safetensors (transformers 5 writes only safetensors) + irlhf.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        meta = {"action_vocab_size": self.action_vocab_size}
        (path / _META_FILE).write_text(json.dumps(meta) + "\n")

    # ---- torch plumbing ----

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def train(self, mode: bool = True) -> CausalLMPolicy:
        self.model.train(mode)
        return self

    def eval(self) -> CausalLMPolicy:
        return self.train(False)

    def to(self, device: torch.device | str) -> CausalLMPolicy:
        self.model.to(device)
        return self

    # ---- scoring ----

    def action_logits(
        self, seqs: Sequences, start: int = 0, end: int | None = None, hidden: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, end - start, A) at positions start..end-1 (default end: T) in the model's
        native alignment (position t scores token t+1 given tokens <= t) and, with `hidden`,
        the last hidden states (B, end - start, H) there. Only those positions reach the output
        layer, and the logits are contiguous."""
        T = seqs.length
        end = T if end is None else end
        _require(0 <= start < end <= T, f"need 0 <= start < end <= {T}, got {start}, {end}")
        attention_mask = seqs.prompt_mask | seqs.completion_mask
        lean = _LeanGPT2.of(self.model, attention_mask)
        if lean is not None:
            # rows with equal prompts share the prompt's computation (`hidden_states`); any
            # common prefix would do (causal attention), the prompt is where rows repeat
            P = seqs.prompt_length
            states = lean.hidden_states(seqs.tokens, start, end, P)  # (B, end - start, H)
            logits = F.linear(states, self.model.lm_head.weight[: self.action_vocab_size])
            return logits, states if hidden else None
        out = self.model(
            input_ids=seqs.tokens,
            attention_mask=attention_mask.long(),
            use_cache=False,
            output_hidden_states=hidden,
            logits_to_keep=T - start,
        )
        logits = out.logits[:, : end - start, : self.action_vocab_size]  # (B, end - start, A)
        return logits, out.hidden_states[-1][:, start:end] if hidden else None

    def _action_logits(self, seqs: Sequences) -> Tensor:
        """(B, T, A): logits of token t+1 given tokens <= t (the model's native alignment)."""
        return self.action_logits(seqs)[0]

    def next_token_logits(self, seqs: Sequences) -> Tensor:
        """(B, T, A): position t holds the logits of token t given tokens < t; position 0 is 0."""
        logits = self._action_logits(seqs)  # (B, T, A)
        return torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :-1]], dim=1)

    def log_probs(self, seqs: Sequences) -> Tensor:
        """(B, T): log pi(token_t | tokens_<t) at completion positions, 0 elsewhere."""
        A, mask = self.action_vocab_size, seqs.completion_mask
        _require(not bool(mask[:, 0].any()), "a completion cannot start at position 0")
        _require(not bool((seqs.tokens[mask] >= A).any()), f"completion has ids >= {A}")
        if not bool(mask.any()):
            return torch.zeros(seqs.tokens.shape, device=self.device)
        # positions before the first completion token predict nothing that is scored
        first = int(mask.any(dim=0).long().argmax())  # >= 1
        T = seqs.length
        logits, _ = self.action_logits(seqs, start=first - 1, end=T - 1)  # (B, T - first, A)
        targets = seqs.tokens[:, first:].clamp(max=A - 1)  # prompt-only ids are masked below
        token_log_probs = gathered_log_probs(logits, targets)  # (B, T - first)
        return F.pad(token_log_probs, (first, 0)) * mask

    # ---- generation ----

    def sample(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        generator: torch.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
    ) -> Sequences:
        """Continue prompts [B, P] by `max_new_tokens` action tokens (sample_with_log_probs)."""
        seqs, _ = self.sample_with_log_probs(
            prompts, max_new_tokens, generator, temperature, top_k, top_p, greedy
        )
        return seqs

    def sample_with_log_probs(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        generator: torch.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
    ) -> tuple[Sequences, Tensor]:
        """Ancestral sampling with a KV cache, in eval mode (no dropout), with `generator` only.

        Returns the sequences and a [B, P + max_new_tokens] tensor: the log-prob of each new token
        under the distribution it was drawn from (after temperature, top-k, top-p; 0 if greedy),
        0 on the prompt. At temperature 1 without filters that equals `log_probs` of the result.
        """
        _require(
            prompts.dim() == 2 and prompts.shape[1] >= 1 and prompts.dtype == torch.long,
            f"prompts must be [B, P >= 1] long, got {tuple(prompts.shape)} {prompts.dtype}",
        )
        _require(greedy or temperature > 0, f"temperature must be > 0, got {temperature}")
        _require(top_k is None or top_k >= 1, f"top_k must be >= 1, got {top_k}")
        _require(top_p is None or 0 < top_p <= 1, f"top_p must be in (0, 1], got {top_p}")
        P, C = prompts.shape[1], max_new_tokens
        context = getattr(self.model.config, "max_position_embeddings", None) or P + C
        _require(0 <= C <= context - P, f"{P} + {C} new tokens do not fit the context {context}")
        prompts = prompts.to(self.device)
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.inference_mode():
                lean = _LeanGPT2.of(self.model)
                draw = (prompts, C, generator, temperature, top_k, top_p, greedy)
                if lean is not None:
                    completion, new_log_probs = lean.sample(self.action_vocab_size, *draw)
                else:
                    completion, new_log_probs = self._sample_hf(*draw)
        finally:
            self.model.train(was_training)
        # cloned outside inference mode: inference tensors cannot be saved for a later backward
        seqs = Sequences.from_prompt_and_completion(prompts, completion.clone())
        log_probs = F.pad(new_log_probs.clone(), (P, 0))  # (B, P + C), 0 on the prompt
        return seqs, log_probs

    def _sample_hf(
        self,
        prompts: Tensor,
        C: int,
        generator: torch.Generator,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        greedy: bool,
    ) -> tuple[Tensor, Tensor]:
        """Any causal LM: the prompt in one pass, then one cached call per new token.
        Returns the new tokens (B, C) and their log-probs (B, C)."""
        B = prompts.shape[0]
        tokens = torch.empty(B, C, dtype=torch.long, device=prompts.device)
        log_probs = torch.empty(B, C, device=prompts.device)
        cache = self.kv_cache()  # filled in place by every call below
        out = self.model(input_ids=prompts, cache=cache, use_cache=True, logits_to_keep=1)
        for step in range(C):
            logits = out.logits[:, -1, : self.action_vocab_size].float()  # (B, A)
            token, log_prob = _draw(logits, generator, temperature, top_k, top_p, greedy)
            tokens[:, step], log_probs[:, step] = token, log_prob
            if step + 1 < C:
                out = self.model(input_ids=token[:, None], cache=cache, use_cache=True)
        return tokens, log_probs

    def kv_cache(self) -> DynamicCache:
        """An empty KV cache for `self.model`, the one its forward would make itself. Pass it as
        `cache=` (with `use_cache=True`) to each call of a decoding loop; each call appends its
        keys and values to it in place. Since transformers 5.24 the argument is `cache`:
        `past_key_values=` (and reading `output.past_key_values`) is deprecated and warns."""
        return DynamicCache(config=self.model.config)


def gathered_log_probs(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] for logits (..., A) and targets (...): one fused
    cross-entropy kernel (no separate log-softmax tensor is kept for the backward pass)."""
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return -flat.view(targets.shape)


class _LeanGPT2:
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
        self.lm_head = getattr(model, "lm_head", None)  # None for a bare GPT2Model backbone
        config = model.config
        self.n_head, self.width = config.n_head, config.n_embd

    @staticmethod
    def of(model: nn.Module, attention_mask: Tensor | None = None) -> _LeanGPT2 | None:
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
        return _LeanGPT2(model)

    def _qkv(self, block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values (B, nh, T, hd) of a block's attention for x (B, T, C)."""
        B, T, C = x.shape
        ln = block.ln_1
        h = F.layer_norm(x, (C,), ln.weight, ln.bias, ln.eps)
        c_attn = block.attn.c_attn
        qkv = torch.addmm(c_attn.bias, h.view(B * T, C), c_attn.weight)  # (B*T, 3C)
        q, k, v = qkv.view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _finish(self, block: nn.Module, x: Tensor, y: Tensor) -> Tensor:
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
        block: nn.Module,
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
        block: nn.Module,
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
        *lower, last = self.transformer.h
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

    def _decode_block(self, block: nn.Module, x: Tensor, cache: Tensor, position: int) -> Tensor:
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
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        greedy: bool,
    ) -> tuple[Tensor, Tensor]:
        """Ancestral sampling with a preallocated KV cache (call under inference mode).
        Returns the new tokens (B, C) and their log-probs (B, C)."""
        B, P = prompts.shape
        nh, width = self.n_head, self.width
        wte, wpe = self.transformer.wte, self.transformer.wpe.weight
        head = self.lm_head.weight[:action_vocab_size]  # (A, C)
        blocks = list(self.transformer.h)
        # per block: keys and values (2, B, nh, T_max, hd) in one tensor
        caches = [wpe.new_empty((2, B, nh, P + C, width // nh)) for _ in blocks]
        tokens, log_probs = [], []
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
            token, log_prob = _draw(logits.float(), generator, temperature, top_k, top_p, greedy)
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


def _draw(
    logits: Tensor,
    generator: torch.Generator,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    greedy: bool,
) -> tuple[Tensor, Tensor]:
    """One token per row of logits (B, A): temperature, then top-k, then top-p (HF's order).

    Returns the tokens (B,) and their log-probs (B,) under the filtered distribution.
    """
    if greedy:
        return logits.argmax(dim=-1), torch.zeros_like(logits[:, 0])
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, A)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token once the tokens ranked above it hold >= top_p; the top token always stays
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    log_probs = logits.log_softmax(dim=-1)  # (B, A)
    # inverse CDF: the token whose cumulative-probability interval holds u ~ U(0, total); one
    # uniform per row (torch.multinomial draws one exponential per vocabulary entry). u stays
    # below the total, so a filtered (zero-probability) token, whose interval is empty, is never
    # picked, not even the last one after rounding.
    cdf = log_probs.exp().cumsum(dim=-1)  # (B, A)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=logits.device) * total
    u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))
    token = torch.searchsorted(cdf, u, right=True)  # (B, 1)
    return token.squeeze(-1), log_probs.gather(-1, token).squeeze(-1)
