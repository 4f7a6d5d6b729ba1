"""A neural policy: any Hugging Face causal LM, seeing only tokens.

The same class serves as demonstrator, student, reference and RLHF policy: tiny GPT-2 or LLaMA
models built locally from a config (`CausalLMPolicy.tiny`, optionally a LLaMA whose attention
sees only the last few tokens: the misspecification knob `window`), or a checkpoint on disk
(`CausalLMPolicy.from_pretrained`: safetensors only, never pickle, never the hub). The model's
vocabulary may hold prompt-only tokens; only ids < `action_vocab_size` are actions, so every
distribution below is over those ids alone.

Alignment follows `irlhf.types`: position t is about token t given tokens < t. Sampling is plain
ancestral sampling with a KV cache (one model call per new token) and the usual temperature, top-k
and nucleus (top-p, Holtzman et al. 2020) filters (`irlhf.policies.sampling`). The log-prob
gather is a fused `cross_entropy` per token (log-softmax and gather in one kernel, as TRL's
`selective_log_softmax` avoids a separate [B, T, V] pass).

Speed (issue 7): a GPT-2 runs through `LeanGPT2` (`irlhf.policies.lean_gpt2`), its forward and
sampler written out over the Hugging Face module's own parameters; anything it does not cover
(other architectures, active dropout, left padding, GPT-2 variants) takes the Hugging Face
forward.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    AutoModelForCausalLM,
    BloomConfig,
    DynamicCache,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PreTrainedConfig,
    PreTrainedModel,
)

from irlhf.policies.lean_gpt2 import LeanGPT2
from irlhf.policies.sampling import Decoding, Steer, draw, mix_uniform
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

    def __init__(
        self, model: PreTrainedModel, action_vocab_size: int | None = None, act_epsilon: float = 0.0
    ) -> None:
        _require(0 <= act_epsilon < 1, f"act_epsilon must be in [0, 1), got {act_epsilon}")
        vocab_size = model.config.vocab_size
        action_vocab_size = vocab_size if action_vocab_size is None else action_vocab_size
        _require(
            1 <= action_vocab_size <= vocab_size,
            f"action_vocab_size must be in [1, {vocab_size}], got {action_vocab_size}",
        )
        self.model = model
        self.vocab_size = vocab_size
        self.action_vocab_size = action_vocab_size
        self.act_epsilon = act_epsilon
        """The policy's acting error: pi = (1 - act_epsilon) softmax(network) + act_epsilon *
        uniform over the action tokens, in every score (`action_logits` returns the mixture's
        log-probs) and every sample. 0 (default) = the network's own distribution."""

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
        act_epsilon: float = 0.0,
        window: int | None = None,
    ) -> CausalLMPolicy:
        """A small randomly initialised GPT-2 (learned positions), LLaMA (rotary positions) or
        BLOOM (ALiBi: no position embeddings, a fixed per-head linear recency bias on the
        attention scores, Press et al. 2022), MLP width 4 * n_embd, dropout 0.

        No special tokens: ids mean whatever the world says. The global RNG is left untouched.
        `max_length` is the context `sample` allows (BLOOM itself has no length limit).
        `act_epsilon`: the policy's acting error (the attribute's docstring).

        `window` (LLaMA only; None = the whole context): every attention layer lets position t
        attend only to positions t - window + 1..t (1 = itself only). The model is then a
        Mistral (Jiang et al. 2023: LLaMA plus transformers' sliding-window mask and KV cache),
        with the same parameters as the LLaMA of the same seed. Layers compound: with `n_layer`
        layers the logits at t depend on the last n_layer * (window - 1) + 1 tokens.
        """
        _require(window is None or window >= 1, f"window must be >= 1 or None, got {window}")
        _require(
            window is None or arch == "llama",
            f"window (sliding-window attention) needs arch 'llama', got {arch!r}",
        )
        cls: type[PreTrainedConfig]
        extra: dict[str, Any]
        if arch == "gpt2":
            cls, extra = GPT2Config, {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
        elif arch == "llama" and window is None:
            cls, extra = LlamaConfig, {"intermediate_size": 4 * n_embd, "attention_dropout": 0.0}
        elif arch == "llama":
            # Mistral's default is grouped-query attention with 8 key/value heads; LLaMA's is none
            cls, extra = MistralConfig, {"intermediate_size": 4 * n_embd, "attention_dropout": 0.0}
            extra |= {"sliding_window": window, "num_key_value_heads": n_head}
        elif arch == "bloom":
            cls, extra = BloomConfig, {"hidden_dropout": 0.0, "attention_dropout": 0.0}
        else:
            raise ValueError(f"arch must be 'gpt2', 'llama' or 'bloom', got {arch!r}")
        # no bos/eos/pad: the defaults (50256; 1 and 2 for LLaMA and BLOOM) would make `generate`
        # stop early
        settings: dict[str, Any] = dict(
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
        config = cls(**settings)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config)
        return CausalLMPolicy(model, action_vocab_size, act_epsilon)

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
            # with output_loading_info: (model, {"missing_keys": [...], ...})
            model, info = cast(
                "tuple[PreTrainedModel, dict[str, list[Any]]]",
                AutoModelForCausalLM.from_pretrained(
                    path, use_safetensors=True, local_files_only=True, output_loading_info=True
                ),
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
        cast(nn.Module, self.model).to(device)  # transformers' wrapped `to` is mistyped
        return self

    # ---- scoring ----

    def action_logits(
        self, seqs: Sequences, start: int = 0, end: int | None = None, hidden: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, end - start, A) at positions start..end-1 (default end: T) in the model's
        native alignment (position t scores token t+1 given tokens <= t) and, with `hidden`,
        the last hidden states (B, end - start, H) there. Only those positions reach the output
        layer, and the logits are contiguous. With an acting error (`act_epsilon` > 0) the
        "logits" are the mixture's log-probs."""
        T = seqs.length
        end = T if end is None else end
        _require(0 <= start < end <= T, f"need 0 <= start < end <= {T}, got {start}, {end}")
        attention_mask = seqs.prompt_mask | seqs.completion_mask
        lean = LeanGPT2.of(self.model, attention_mask)
        if lean is not None:
            # rows with equal prompts share the prompt's computation (`hidden_states`); any
            # common prefix would do (causal attention), the prompt is where rows repeat
            P = seqs.prompt_length
            states = lean.hidden_states(seqs.tokens, start, end, P)  # (B, end - start, H)
            logits = F.linear(states, self.model.lm_head.weight[: self.action_vocab_size])
            return self._acting(logits), states if hidden else None
        out = self.model(
            input_ids=seqs.tokens,
            attention_mask=attention_mask.long(),
            use_cache=False,
            output_hidden_states=hidden,
            logits_to_keep=T - start,
        )
        logits = out.logits[:, : end - start, : self.action_vocab_size]  # (B, end - start, A)
        return self._acting(logits), out.hidden_states[-1][:, start:end] if hidden else None

    def _acting(self, logits: Tensor) -> Tensor:
        """The network's logits, or with an acting error the mixture's log-probs."""
        if self.act_epsilon == 0:
            return logits
        return mix_uniform(logits.log_softmax(dim=-1), self.act_epsilon)

    def _action_logits(self, seqs: Sequences) -> Tensor:
        """(B, T, A): logits of token t+1 given tokens <= t (the model's native alignment)."""
        return self.action_logits(seqs)[0]

    def next_token_logits(self, seqs: Sequences) -> Tensor:
        """(B, T, A): position t holds the logits of token t given tokens < t; position 0 is 0."""
        logits = self._action_logits(seqs)  # (B, T, A)
        return torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :-1]], dim=1)

    def log_probs(self, seqs: Sequences) -> Tensor:
        """(B, T): log pi(token_t | tokens_<t) at completion positions, 0 elsewhere."""
        return completion_log_probs(self, seqs)

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
        steer: Steer | None = None,
    ) -> Sequences:
        """Continue prompts [B, P] by `max_new_tokens` action tokens (sample_with_log_probs).

        `steer(step, drawn)` (optional) is called with each step's drawn tokens [B] and returns
        the tokens [B] to append instead (e.g. DAgger's expert steps), still with one KV-cached
        forward per token."""
        decoding = Decoding(temperature, top_k, top_p, greedy, self.act_epsilon)
        return self._generate(prompts, max_new_tokens, generator, decoding, steer)[0]

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
        decoding = Decoding(temperature, top_k, top_p, greedy, self.act_epsilon)
        return self._generate(prompts, max_new_tokens, generator, decoding, None)

    def _generate(
        self,
        prompts: Tensor,
        C: int,
        generator: torch.Generator,
        decoding: Decoding,
        steer: Steer | None,
    ) -> tuple[Sequences, Tensor]:
        _require(
            prompts.dim() == 2 and prompts.shape[1] >= 1 and prompts.dtype == torch.long,
            f"prompts must be [B, P >= 1] long, got {tuple(prompts.shape)} {prompts.dtype}",
        )
        P = prompts.shape[1]
        context = getattr(self.model.config, "max_position_embeddings", None) or P + C
        _require(0 <= C <= context - P, f"{P} + {C} new tokens do not fit the context {context}")
        prompts = prompts.to(self.device)
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.inference_mode():
                lean = LeanGPT2.of(self.model)
                args = (prompts, C, generator, decoding, steer)
                if lean is not None:
                    completion, new_log_probs = lean.sample(self.action_vocab_size, *args)
                else:
                    completion, new_log_probs = self._sample_hf(*args)
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
        decoding: Decoding,
        steer: Steer | None = None,
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
            token, log_prob = draw(logits, generator, decoding)
            if steer is not None:
                token = steer(step, token)
            tokens[:, step], log_probs[:, step] = token, log_prob
            if step + 1 < C:
                out = self.model(input_ids=token[:, None], cache=cache, use_cache=True)
        return tokens, log_probs

    def kv_cache(self) -> DynamicCache:
        """An empty KV cache for `self.model`, the one its forward would make itself (but at
        window 1, below). Pass it as `cache=` (with `use_cache=True`) to each call of a decoding
        loop; each call appends its keys and values to it in place. Since transformers 5.24 the
        argument is `cache`: `past_key_values=` (and reading `output.past_key_values`) is
        deprecated and warns.

        A sliding-window model's cache keeps only the last window - 1 keys per layer, except at
        window 1: transformers' sliding-window cache layer then keeps keys[-0:], i.e. all of
        them, and disagrees with its own mask, so that model gets a full cache (under the same
        window mask, which is exact)."""
        config = self.model.config
        if getattr(config, "sliding_window", None) == 1:
            return DynamicCache()
        return DynamicCache(config=config)


class _Scorer(Protocol):
    """What `completion_log_probs` calls: a policy's device, action vocabulary and logits."""

    @property
    def device(self) -> torch.device: ...
    @property
    def action_vocab_size(self) -> int: ...
    def action_logits(
        self, seqs: Sequences, start: int = 0, end: int | None = None, hidden: bool = False
    ) -> tuple[Tensor, Tensor | None]: ...


def completion_log_probs(policy: _Scorer, seqs: Sequences) -> Tensor:
    """(B, T): log pi(token_t | tokens_<t) at completion positions, 0 elsewhere, from the
    policy's `action_logits` (`CausalLMPolicy.log_probs`; the ensemble's, row by row)."""
    A, mask = policy.action_vocab_size, seqs.completion_mask
    _require(not bool(mask[:, 0].any()), "a completion cannot start at position 0")
    _require(not bool((seqs.tokens[mask] >= A).any()), f"completion has ids >= {A}")
    if not bool(mask.any()):
        return torch.zeros(seqs.tokens.shape, device=policy.device)
    # positions before the first completion token predict nothing that is scored
    first = int(mask.any(dim=0).long().argmax())  # >= 1
    T = seqs.length
    logits, _ = policy.action_logits(seqs, start=first - 1, end=T - 1)  # (B, T - first, A)
    targets = seqs.tokens[:, first:].clamp(max=A - 1)  # prompt-only ids are masked below
    token_log_probs = gathered_log_probs(logits, targets)  # (B, T - first)
    return F.pad(token_log_probs, (first, 0)) * mask


def gathered_log_probs(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] for logits (..., A) and targets (...): one fused
    cross-entropy kernel (no separate log-softmax tensor is kept for the backward pass)."""
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return -flat.view(targets.shape)
