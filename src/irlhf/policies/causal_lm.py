"""A neural policy: any Hugging Face causal LM, seeing only tokens.

The same class serves as demonstrator, student, reference and RLHF policy: tiny GPT-2 or LLaMA
models built locally from a config (`CausalLMPolicy.tiny`), or a checkpoint on disk
(`CausalLMPolicy.from_pretrained`: safetensors only, never pickle, never the hub). The model's
vocabulary may hold prompt-only tokens; only ids < `action_vocab_size` are actions, so every
distribution below is over those ids alone.

Alignment follows `irlhf.types`: position t is about token t given tokens < t. Sampling is plain
ancestral sampling with a KV cache (one model call per new token) and the usual temperature, top-k
and nucleus (top-p, Holtzman et al. 2020) filters. The log-prob gather is TRL's
`selective_log_softmax`: picked logit minus logsumexp, never a [B, T, V] log-softmax.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedModel

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

    def _action_logits(self, seqs: Sequences) -> Tensor:
        """(B, T, A): logits of token t+1 given tokens <= t (the model's native alignment)."""
        attention_mask = (seqs.prompt_mask | seqs.completion_mask).long()
        out = self.model(input_ids=seqs.tokens, attention_mask=attention_mask, use_cache=False)
        return out.logits[..., : self.action_vocab_size]  # (B, T, A)

    def next_token_logits(self, seqs: Sequences) -> Tensor:
        """(B, T, A): position t holds the logits of token t given tokens < t; position 0 is 0."""
        logits = self._action_logits(seqs)  # (B, T, A)
        return torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :-1]], dim=1)

    def log_probs(self, seqs: Sequences) -> Tensor:
        """(B, T): log pi(token_t | tokens_<t) at completion positions, 0 elsewhere."""
        A, mask = self.action_vocab_size, seqs.completion_mask
        _require(not bool(mask[:, 0].any()), "a completion cannot start at position 0")
        _require(not bool((seqs.tokens[mask] >= A).any()), f"completion has ids >= {A}")
        logits = self._action_logits(seqs)[:, :-1]  # (B, T-1, A), predicting tokens 1..T-1
        targets = seqs.tokens[:, 1:].clamp(max=A - 1)  # prompt-only ids are masked out below
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        token_log_probs = picked - torch.logsumexp(logits, dim=-1)  # (B, T-1)
        return torch.cat([torch.zeros_like(token_log_probs[:, :1]), token_log_probs], 1) * mask

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
                # the prompt in one pass; then each new token attends to the cached keys/values
                out = self.model(input_ids=prompts, use_cache=True, logits_to_keep=1)
                new_tokens, new_log_probs = [], []
                for step in range(C):
                    logits = out.logits[:, -1, : self.action_vocab_size].float()  # (B, A)
                    token, log_prob = _draw(logits, generator, temperature, top_k, top_p, greedy)
                    new_tokens.append(token)
                    new_log_probs.append(log_prob)
                    if step + 1 < C:
                        kv, token = out.past_key_values, token[:, None]  # (B, 1)
                        out = self.model(input_ids=token, past_key_values=kv, use_cache=True)
        finally:
            self.model.train(was_training)
        # stacked outside inference mode: inference tensors cannot be saved for a later backward
        completion = torch.stack(new_tokens, 1) if C else prompts[:, :0]  # (B, C)
        seqs = Sequences.from_prompt_and_completion(prompts, completion)
        log_probs = torch.zeros(seqs.tokens.shape, device=self.device)  # (B, P + C)
        if C:
            log_probs[:, P:] = torch.stack(new_log_probs, 1)
        return seqs, log_probs


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
    token = torch.multinomial(log_probs.exp(), 1, generator=generator)  # (B, 1)
    return token.squeeze(-1), log_probs.gather(-1, token).squeeze(-1)
