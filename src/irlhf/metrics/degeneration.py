"""Text degeneration: repetition, diversity, loops, and the self-reinforcement of repetition.

Sequences are lists (or 1-D tensors) of token ids, usually the completions of a policy.

- `seq_rep_n` (Welleck et al. 2019): per sequence 1 - |unique n-grams| / |n-grams|, averaged.
- `rep_n`: the local version — the fraction of positions whose n-gram already occurred within the
  previous `window` tokens (Welleck's rep/l generalised to n-grams; Xu et al. 2022's rep-w for n=1).
- `distinct_n` (Li et al. 2016): |unique n-grams| / |n-grams| pooled over all sequences.
- `loop_rate`: the fraction of sequences whose suffix is exactly periodic: some period p <=
  `max_period` repeated at least `min_repeats` times at the end. `soft_loop_rate` counts a
  sequence whose last `tail` tokens have rep-4 > 0.5 (for near-loops that never repeat exactly).
- `self_reinforcement` (Xu et al. 2022, "Learning to break the loop"): repeat a sentence n times
  in the context and read the model's probabilities of the sentence's tokens in the n-th copy:
  TP = mean token probability, IP = fraction of tokens whose probability rose above the first
  copy's, WR = fraction of tokens that rose and are the model's top-1 choice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

TokenSeq = Sequence[int] | Tensor


def _tokens(seq: TokenSeq) -> list[int]:
    return seq.tolist() if isinstance(seq, Tensor) else list(seq)


def _ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def seq_rep_n(seqs: Iterable[TokenSeq], n: int = 4) -> float:
    """Mean over sequences of 1 - unique/total n-grams (sequences shorter than n are skipped)."""
    scores = []
    for seq in seqs:
        grams = _ngrams(_tokens(seq), n)
        if grams:
            scores.append(1.0 - len(set(grams)) / len(grams))
    return _mean(scores)


def rep_n(seqs: Iterable[TokenSeq], n: int = 4, window: int = 64) -> float:
    """Fraction of n-gram positions whose n-gram occurred in the previous `window` tokens."""
    repeats, total = 0, 0
    for seq in seqs:
        tokens = _tokens(seq)
        grams = _ngrams(tokens, n)
        for i, gram in enumerate(grams):
            earlier = grams[max(0, i - window + n - 1) : i]  # n-grams inside the window
            repeats += gram in earlier
            total += 1
    return repeats / total if total else float("nan")


def distinct_n(seqs: Iterable[TokenSeq], n: int = 4) -> float:
    """|unique n-grams| / |n-grams| over all sequences together."""
    grams = [g for seq in seqs for g in _ngrams(_tokens(seq), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def loop_period(seq: TokenSeq, min_repeats: int = 3, max_period: int = 32) -> int | None:
    """The smallest period p such that the sequence ends with >= min_repeats copies of a p-gram."""
    tokens = _tokens(seq)
    for p in range(1, max_period + 1):
        span = p * min_repeats
        if span > len(tokens):
            break
        tail = tokens[-span:]
        if all(tail[i] == tail[i - p] for i in range(p, span)):
            return p
    return None


def loop_rate(seqs: Iterable[TokenSeq], min_repeats: int = 3, max_period: int = 32) -> float:
    """Fraction of sequences that end in an exact loop (see `loop_period`)."""
    flags = [loop_period(s, min_repeats, max_period) is not None for s in seqs]
    return _mean([float(f) for f in flags])


def soft_loop_rate(seqs: Iterable[TokenSeq], tail: int = 64, threshold: float = 0.5) -> float:
    """Fraction of sequences whose last `tail` tokens have seq-rep-4 above `threshold`."""
    flags = [seq_rep_n([_tokens(s)[-tail:]], 4) > threshold for s in seqs]
    return _mean([float(f) for f in flags])


@torch.inference_mode()
def self_reinforcement(
    policy, sentences: Sequence[TokenSeq], max_repeats: int = 8, prefix: TokenSeq = ()
) -> list[dict]:
    """TP, IP and WR against the number of repeats n = 1..max_repeats, averaged over sentences.

    `policy` needs `next_token_logits(Sequences) -> [B, T, A]` (e.g. a CausalLMPolicy); the context
    is `prefix` followed by n copies of the sentence (prefix may be empty if the sentence's first
    token need not be scored). Returns rows {n_repeats, tp, ip, wr}."""
    from irlhf.types import Sequences

    prefix_tokens = _tokens(prefix)
    rows = {n: {"tp": [], "ip": [], "wr": []} for n in range(1, max_repeats + 1)}
    for sentence in sentences:
        s = _tokens(sentence)
        context = torch.tensor([prefix_tokens + s * max_repeats])
        prompt = torch.zeros_like(context, dtype=torch.bool)
        prompt[:, : len(prefix_tokens)] = True
        seqs = Sequences(context, prompt, ~prompt).to(policy.device)
        probs = torch.softmax(policy.next_token_logits(seqs).float(), dim=-1)[0].cpu()  # (T, A)
        # Without a prefix the first copy's first token has no context: score every copy from
        # its second token, so that the copies are compared token for token.
        offsets = torch.arange(0 if prefix_tokens else 1, len(s))
        first = None
        for n in range(1, max_repeats + 1):
            positions = len(prefix_tokens) + (n - 1) * len(s) + offsets
            targets = context[0, positions]
            p = probs[positions, targets]  # (len,)
            top1 = probs[positions].argmax(dim=-1) == targets
            if first is None:
                first = p
            rose = p > first
            rows[n]["tp"].append(float(p.mean()))
            rows[n]["ip"].append(float(rose.double().mean()))
            rows[n]["wr"].append(float((rose & top1).double().mean()))
    return [
        {"n_repeats": n, **{k: _mean(v) for k, v in values.items()}} for n, values in rows.items()
    ]
