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

None returns nan: a metric with nothing to average (no sequences, or none with an n-gram) raises
`UndefinedMetric` (a ValueError).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from irlhf.metrics.undefined import UndefinedMetric

TokenSeq = Sequence[int] | Tensor


def _tokens(seq: TokenSeq) -> list[int]:
    return seq.tolist() if isinstance(seq, Tensor) else list(seq)


def _ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _mean(values: list[float], what: str) -> float:
    if not values:
        raise UndefinedMetric(f"{what} is undefined: nothing to average")
    return sum(values) / len(values)


def seq_rep_n(seqs: Iterable[TokenSeq], n: int = 4) -> float:
    """Mean over sequences of 1 - unique/total n-grams (sequences shorter than n are skipped;
    `UndefinedMetric` if every one is)."""
    scores = [_seq_rep(_tokens(seq), n) for seq in seqs]
    return _mean([s for s in scores if s is not None], f"seq_rep_{n} (no sequence has {n} tokens)")


def _seq_rep(tokens: list[int], n: int) -> float | None:
    """1 - unique/total n-grams of one sequence; None when it is shorter than n."""
    grams = _ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else None


def rep_n(seqs: Iterable[TokenSeq], n: int = 4, window: int = 64) -> float:
    """Fraction of n-gram positions whose n-gram occurred in the previous `window` tokens
    (`UndefinedMetric` when no sequence has n tokens)."""
    repeats, total = 0, 0
    for seq in seqs:
        tokens = _tokens(seq)
        grams = _ngrams(tokens, n)
        for i, gram in enumerate(grams):
            earlier = grams[max(0, i - window + n - 1) : i]  # n-grams inside the window
            repeats += gram in earlier
            total += 1
    if not total:
        raise UndefinedMetric(f"rep_{n} is undefined: no sequence has {n} tokens")
    return repeats / total


def distinct_n(seqs: Iterable[TokenSeq], n: int = 4) -> float:
    """|unique n-grams| / |n-grams| over all sequences together (`UndefinedMetric` when no
    sequence has n tokens)."""
    grams = [g for seq in seqs for g in _ngrams(_tokens(seq), n)]
    if not grams:
        raise UndefinedMetric(f"distinct_{n} is undefined: no sequence has {n} tokens")
    return len(set(grams)) / len(grams)


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
    return _mean([float(f) for f in flags], "loop_rate of no sequences")


def soft_loop_rate(seqs: Iterable[TokenSeq], tail: int = 64, threshold: float = 0.5) -> float:
    """Fraction of sequences whose last `tail` tokens have seq-rep-4 above `threshold` (a
    sequence shorter than 4 tokens has no 4-gram to repeat: not a loop)."""
    flags = []
    for s in seqs:
        score = _seq_rep(_tokens(s)[-tail:], 4)
        flags.append(score is not None and score > threshold)
    return _mean([float(f) for f in flags], "soft_loop_rate of no sequences")


@torch.inference_mode()
def self_reinforcement(
    policy, sentences: Sequence[TokenSeq], max_repeats: int = 8, prefix: TokenSeq = ()
) -> list[dict]:
    """TP, IP and WR against the number of repeats n = 1..max_repeats, averaged over sentences.

    `policy` needs `next_token_logits(Sequences) -> [B, T, A]` (e.g. a CausalLMPolicy); the context
    is `prefix` followed by n copies of the sentence (prefix may be empty if the sentence's first
    token need not be scored). Returns rows {n_repeats, tp, ip, wr}. Raises ValueError when
    there is no sentence, or a sentence has no token to score (empty, or one token without a
    prefix)."""
    from irlhf.types import Sequences

    prefix_tokens = _tokens(prefix)
    if len(sentences) == 0:
        raise ValueError("self_reinforcement needs at least one sentence")
    rows: dict[int, dict[str, list[float]]] = {
        n: {"tp": [], "ip": [], "wr": []} for n in range(1, max_repeats + 1)
    }
    for sentence in sentences:
        s = _tokens(sentence)
        if len(s) < (1 if prefix_tokens else 2):
            raise ValueError(
                f"self_reinforcement: sentence {s} has no token to score "
                "(a sentence needs 2 tokens without a prefix, 1 with one)"
            )
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
        {"n_repeats": n, **{k: _mean(v, k) for k, v in values.items()}}
        for n, values in rows.items()
    ]
