"""Language-model pre-training on a token stream: the text world's teacher and the degeneration
study's real-text control student (next-token cross-entropy on random windows, AdamW with a
linear warm-up and cosine decay), and the held-out loss."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from irlhf import losses
from irlhf.policies.causal_lm import CausalLMPolicy


def random_windows(stream: Tensor, n: int, length: int, generator: torch.Generator) -> Tensor:
    """[n, length] random windows of a token stream."""
    if len(stream) <= length:
        raise ValueError(f"token stream of {len(stream)} tokens is too short for {length}")
    starts = torch.randint(len(stream) - length, (n,), generator=generator)
    return torch.stack([stream[s : s + length] for s in starts.tolist()])


def pretrain_lm(
    policy: CausalLMPolicy,
    stream: Tensor,
    steps: int,
    batch_size: int,
    context: int,
    lr: float,
    generator: torch.Generator,
    warmup: int = 0,
    weight_decay: float = 0.0,
    bf16: bool = False,
    progress: str | None = None,
) -> list[dict]:
    """Next-token cross-entropy on random windows of `context + 1` tokens (inputs and shifted
    targets, so every position of the context is trained). Returns one record per step.
    `progress`: a description to show a progress bar (steps done, time left) under."""
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95)
    )

    def schedule(step: int) -> float:  # linear warm-up, cosine decay to 0.1
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    policy.train()
    records = []
    step_range: Iterable[int] = range(steps)
    if progress is not None:
        from rich.progress import track

        step_range = track(step_range, description=progress, transient=True)
    for step in step_range:
        window = random_windows(stream, batch_size, context + 1, generator).to(policy.device)
        inputs, targets = window[:, :-1], window[:, 1:]  # (B, C)
        with torch.autocast(policy.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = policy.model(input_ids=inputs, use_cache=False).logits  # (B, C, V)
        logits = logits[..., : policy.action_vocab_size].float()
        loss, metrics = losses.next_token_cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        records.append({"step": step, **metrics, "optim/lr": scheduler.get_last_lr()[0]})
    policy.eval()
    return records


@torch.inference_mode()
def lm_loss(policy: CausalLMPolicy, stream: Tensor, context: int, max_windows: int = 256) -> float:
    """Mean next-token NLL (nats/token) over consecutive non-overlapping windows of a stream."""
    n = min(max_windows, (len(stream) - 1) // context)
    if n < 1:
        raise ValueError(f"token stream of {len(stream)} tokens is shorter than {context + 1}")
    windows = stream[: n * context + 1]
    total, count = 0.0, 0
    policy.eval()
    for i in range(0, n, 32):
        rows = range(i, min(n, i + 32))
        inputs = torch.stack([windows[r * context : (r + 1) * context] for r in rows])
        targets = torch.stack([windows[r * context + 1 : (r + 1) * context + 1] for r in rows])
        logits = policy.model(input_ids=inputs.to(policy.device)).logits
        logits = logits[..., : policy.action_vocab_size].float()
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1).to(policy.device),
            reduction="sum",
        ).item()
        count += targets.numel()
    return total / count
