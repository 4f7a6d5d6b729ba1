"""measure_exposure against Arora et al. 2022's definitions, computed by a plain loop.

Two tiny random GPT-2s (expert and model) share a word-level tokenizer. measure_exposure samples
and scores continuations; an independent loop re-scores the very continuations it wrote
(samples.parquet) one prefix at a time (a full forward per prefix, no cache, softmax in
float64) and recomputes eps_<=l, R_<=l, AccErr_<=l, %ExAccErr_<=l and the NLL-oracle per prompt
and l with Python sums."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from irlhf.measure import measure_exposure
from irlhf.policies.causal_lm import CausalLMPolicy

from .hf_dirs import save_model, token_words

V, L = 12, 6
PROMPTS = ["t1 t2", "t3", "t4 t5 t6", "t7 t8", "t9", "t0 t1 t2"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    words = token_words(V)
    expert = CausalLMPolicy.tiny(V, n_layer=1, n_embd=16, n_head=2, max_length=16, seed=1)
    with torch.no_grad():  # a sharper expert than GPT-2's init
        for p in expert.model.parameters():
            if p.dim() == 2:
                p.mul_(15)
    model = CausalLMPolicy.tiny(V, n_layer=1, n_embd=16, n_head=2, max_length=16, seed=2)
    return save_model(expert, root / "expert", words), save_model(model, root / "model", words)


def _dist(policy: CausalLMPolicy, tokens: list[int]) -> np.ndarray:
    """The next-token distribution after `tokens`, float64, by a plain full forward."""
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([tokens])).logits[0, -1].double()
    return torch.softmax(logits, -1).numpy()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    total = 0.0
    for a in range(len(p)):
        if p[a] > 0:
            total += math.inf if q[a] == 0 else p[a] * math.log(p[a] / q[a])
    return total


def _top_k(p: np.ndarray, k: int) -> np.ndarray:
    keep = np.argsort(-p, kind="stable")[:k]
    q = np.zeros_like(p)
    q[keep] = p[keep]
    return q / q.sum()


def test_measure_exposure_agrees_with_a_plain_loop(dirs, tmp_path: Path) -> None:
    expert_dir, model_dir = dirs
    out = tmp_path / "out"
    doc = measure_exposure(
        expert_dir, model_dir, PROMPTS, out, max_new_tokens=L,
        decodings=("sample", "greedy", "top-k=3"), samples=3, seed=5, batch_size=4,
        n_bootstrap=200,
    )  # fmt: skip
    expert = CausalLMPolicy.from_pretrained(expert_dir).eval()
    model = CausalLMPolicy.from_pretrained(model_dir).eval()
    ids = [[int(w[1:]) for w in p.split()] for p in PROMPTS]
    samples = pd.read_parquet(out / "samples.parquet")
    results = pd.read_parquet(out / "results.parquet")

    def per_step(source: str, policy_of) -> tuple[np.ndarray, np.ndarray]:
        """[n_prompts, L] mean over samples of per-step KL(expert || h) and -log expert."""
        kl, nll = np.zeros((len(PROMPTS), L)), np.zeros((len(PROMPTS), L))
        for i in range(len(PROMPTS)):
            rows = samples[(samples.source == source) & (samples.prompt_index == i)]
            for completion in rows.completion_ids:
                for t in range(L):
                    prefix = ids[i] + list(completion[:t])
                    p = _dist(expert, prefix)
                    kl[i, t] += _kl(p, policy_of(_dist(model, prefix))) / len(rows)
                    nll[i, t] += -math.log(p[completion[t]]) / len(rows)
        return kl, nll

    policies = {"sample": lambda q: q, "top-k=3": lambda q: _top_k(q, 3)}
    for decoding, h in policies.items():
        e_kl, _ = per_step("expert", h)
        r_kl, nll = per_step(decoding, h)
        for l in range(1, L + 1):
            eps = np.mean([sum(e_kl[i, :l]) / l for i in range(len(PROMPTS))])
            R = np.mean([sum(r_kl[i, :l]) for i in range(len(PROMPTS))])
            expected = {"eps": eps, "R": R, "nll_oracle": np.mean(nll[:, :l].sum(1) / l)}
            if 0 < eps < math.inf:
                expected |= {"acc_err": R / eps, "pct_ex_acc_err": (R - l * eps) / (l * eps) * 100}
            for quantity, value in expected.items():
                row = results[(results.decoding == decoding) & (results.l == l)
                              & (results.quantity == quantity)]  # fmt: skip
                assert len(row) == 1, (decoding, quantity, l)
                got = float(row.value.iloc[0])
                if math.isinf(value):
                    assert math.isinf(got), (decoding, quantity, l, got)
                else:
                    # float32 forwards of a batch vs of one prefix differ by ~1e-7 relative;
                    # %ExAccErr is (AccErr / l - 1) * 100: an absolute tolerance in percent
                    tol = 1e-3 if quantity == "pct_ex_acc_err" else 1e-9
                    assert got == pytest.approx(value, rel=1e-5, abs=tol), (decoding, quantity, l)
                assert row.ci_low.iloc[0] <= got <= row.ci_high.iloc[0]
    # top-k gives probability 0 to tokens the expert emits: eps is +inf, the ratios are left out
    top = results[results.decoding == "top-k=3"]
    assert (
        not (top.quantity == "acc_err").any()
        and (top[top.quantity == "eps"].value == math.inf).all()
    )
    assert any("top-k=3: eps_<=l is +inf" in n for n in doc["notes"])
    # greedy continuations are the model's argmax, one per prompt
    greedy = samples[samples.source == "greedy"]
    assert len(greedy) == len(PROMPTS)
    for i, completion in zip(greedy.prompt_index, greedy.completion_ids, strict=True):
        tokens = list(ids[i])
        for t in range(L):
            assert completion[t] == int(np.argmax(_dist(model, tokens)))
            tokens.append(int(completion[t]))
    # the model's own distribution along greedy continuations: finite, and R_model matches
    r_kl, _ = per_step("greedy", lambda q: q)
    row = results[
        (results.decoding == "greedy") & (results.l == L) & (results.quantity == "R_model")
    ]
    assert float(row.value.iloc[0]) == pytest.approx(r_kl.sum(1).mean(), rel=1e-6)
