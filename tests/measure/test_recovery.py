"""measure_recovery against He et al. 2021's definitions, computed by a plain loop.

Two tiny GPT-2s (a sharpened expert and a model) share a word-level tokenizer. measure_recovery
writes every prefix, perturbation and continuation it drew (samples.parquet); an independent
loop re-scores those very tokens one prefix at a time (a full forward per prefix, no cache,
softmax in float64) and recomputes each curve per prompt and d with Python sums. A model equal
to the expert has no excess KL at all; bad inputs are one line, exit code 2 and nothing written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from irlhf.cli import app
from irlhf.measure import MeasureInputError, measure_recovery
from irlhf.policies.causal_lm import CausalLMPolicy

from .hf_dirs import save_model, token_words

V, POSITION, K, D = 12, 2, 2, 5
PROMPTS = ["t1 t2", "t3"]
TINY = dict(n_layer=1, n_embd=16, n_head=2, max_length=16)
runner = CliRunner()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recovery")
    words = token_words(V)
    expert = CausalLMPolicy.tiny(V, seed=1, **TINY)
    with torch.no_grad():  # a sharper expert than GPT-2's init: perturbations then matter
        for p in expert.model.parameters():
            if p.dim() == 2:
                p.mul_(15)
    model = CausalLMPolicy.tiny(V, seed=2, **TINY)
    save_model(CausalLMPolicy.tiny(V, seed=2, **TINY), root / "other_tok", token_words(V, "w"))
    (root / "empty.txt").write_text("\n")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {
        "root": root,
        "expert": save_model(expert, root / "expert", words),
        "model": save_model(model, root / "model", words),
        "twin": save_model(expert, root / "twin", words),  # the expert's very weights
    }


def _dist(policy: CausalLMPolicy, tokens: list[int]) -> np.ndarray:
    """The next-token distribution after `tokens`, float64, by a plain full forward."""
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([tokens])).logits[0, -1].double()
    return torch.softmax(logits, -1).numpy()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return sum(p[a] * math.log(p[a] / q[a]) for a in range(len(p)) if p[a] > 0)


def _value(results: pd.DataFrame, quantity: str, d: int) -> float:
    row = results[(results.quantity == quantity) & (results.d == d)]
    assert len(row) == 1, (quantity, d)
    return float(row.value.iloc[0])


@pytest.mark.parametrize("perturbation", ["random", "unlikely"])
def test_measure_recovery_agrees_with_a_plain_loop(dirs, tmp_path: Path, perturbation) -> None:
    out = tmp_path / "out"
    doc = measure_recovery(
        dirs["expert"], dirs["model"], PROMPTS, out, position=POSITION, k=K, distance=D,
        perturbation=perturbation, samples=3, seed=3, batch_size=2, device="cpu",
        n_bootstrap=100,
    )  # fmt: skip
    expert = CausalLMPolicy.from_pretrained(dirs["expert"]).eval()
    model = CausalLMPolicy.from_pretrained(dirs["model"]).eval()
    ids = [[int(w[1:]) for w in p.split()] for p in PROMPTS]
    samples = pd.read_parquet(out / "samples.parquet")
    results = pd.read_parquet(out / "results.parquet")
    assert len(samples) == 3 * len(PROMPTS)
    curves = {name: np.zeros((len(PROMPTS), D)) for name in
              ("kl_perturbed", "kl_clean", "trace_model", "trace_expert")}  # fmt: skip
    for row in samples.itertuples():
        x, clean, pert = ids[row.prompt_index], list(row.prefix_ids), list(row.perturbed_ids)
        # only positions POSITION .. POSITION + K - 1 of the expert's prefix are replaced
        assert clean[:POSITION] == pert[:POSITION] and len(pert) == len(clean) == POSITION + K
        if perturbation == "unlikely":
            for j in range(POSITION, POSITION + K):
                assert pert[j] == int(np.argmin(_dist(expert, x + pert[:j])))
        y_p, y_c, y_e = (list(row.model_perturbed_ids), list(row.model_clean_ids),
                         list(row.expert_perturbed_ids))  # fmt: skip
        for d in range(D):
            i, n = row.prompt_index, 3
            after_p = x + pert + y_p[:d]
            curves["kl_perturbed"][i, d] += _kl(_dist(expert, after_p), _dist(model, after_p)) / n
            after_c = x + clean + y_c[:d]
            curves["kl_clean"][i, d] += _kl(_dist(expert, after_c), _dist(model, after_c)) / n
            curves["trace_model"][i, d] += (
                _kl(_dist(model, x + clean + y_p[:d]), _dist(model, after_p)) / n
            )
            curves["trace_expert"][i, d] += (
                _kl(_dist(expert, x + clean + y_e[:d]), _dist(expert, x + pert + y_e[:d])) / n
            )
    means = {name: c.mean(axis=0) for name, c in curves.items()}
    means["excess_kl"] = means["kl_perturbed"] - means["kl_clean"]
    for name, curve in means.items():
        for d in range(1, D + 1):
            # float32 forwards of a batch vs of one prefix differ by ~1e-7 relative
            assert _value(results, name, d) == pytest.approx(curve[d - 1], rel=1e-4, abs=1e-6)
    row = results[results.quantity == "excess_kl"]
    assert (row.ci_low <= row.value + 1e-12).all() and (row.value <= row.ci_high + 1e-12).all()
    # the half-life by hand: the first d whose excess is below half the excess at d = 1
    excess = means["excess_kl"]
    lives = {r["curve"]: r for r in doc["half_lives"]}
    if excess[0] > 0:
        below = [d + 1 for d in range(D) if excess[d] < excess[0] / 2]
        expected = float(below[0]) if below else math.inf
        got = lives["excess_kl"]["value"]
        assert (math.inf if got == "inf" else got) == expected
    else:
        assert "excess_kl" not in lives


def test_a_model_equal_to_the_expert_has_no_excess_kl(dirs, tmp_path: Path) -> None:
    out = tmp_path / "twin"
    doc = measure_recovery(
        dirs["expert"], dirs["twin"], PROMPTS, out, position=POSITION, k=1, distance=D,
        samples=4, seed=1, device="cpu", n_bootstrap=100,
    )  # fmt: skip
    results = pd.read_parquet(out / "results.parquet")
    for d in range(1, D + 1):
        for name in ("excess_kl", "kl_perturbed", "kl_clean"):
            assert abs(_value(results, name, d)) < 1e-9, (name, d)
    claims = {c["claim"].split(" (")[0]: c["verdict"] for c in doc["claims"]}
    raised = "The perturbation raises the model's per-step KL from the expert at d = 1"
    assert claims[raised] == "does not hold"
    assert all(r["curve"] != "excess_kl" for r in doc["half_lives"])
    assert any("no half-life of excess_kl" in n for n in doc["notes"])
    # nothing in any output is nan (undefined values are left out)
    text = (out / "measure.json").read_text()
    assert "NaN" not in text and "null" not in text
    assert not results[["value", "ci_low", "ci_high"]].isna().any().any()


def invoke(dirs: dict[str, Path], **overrides: object):
    options = {
        "expert": dirs["expert"], "model": dirs["model"], "prompts": dirs["root"] / "prompts.txt",
        "out": dirs["root"] / "out", "position": 1, "distance": 3, "device": "cpu",
    } | overrides  # fmt: skip
    args = ["measure", "recovery"]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    return runner.invoke(app, args)


BAD = [
    ({"expert": "{root}/absent"}, "--expert {root}/absent does not exist"),
    ({"model": "{root}/other_tok"}, "different tokenizers"),
    ({"prompts": "{root}/empty.txt"}, "holds no prompts"),
    ({"perturbation": "swap"}, "--perturbation must be one of random, unlikely"),
    ({"k": 0}, "--k must be an integer >= 1"),
    ({"distance": 13}, "exceeds the model's context of 16 tokens"),
    ({"distance": 14}, "leaves no room for a prompt in the model's context of 16"),
]


@pytest.mark.parametrize(("overrides", "fragment"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(dirs, overrides, fragment) -> None:
    out = dirs["root"] / "out_bad"
    resolved = {k: str(v).format(root=dirs["root"]) for k, v in overrides.items()}
    result = invoke(dirs, out=out, **resolved)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment.format(root=dirs["root"]) in lines[0], lines[0]
    assert not out.exists()
    with pytest.raises(MeasureInputError):  # the function raises what the CLI prints
        measure_recovery(
            resolved.get("expert", dirs["expert"]), resolved.get("model", dirs["model"]),
            resolved.get("prompts", dirs["root"] / "prompts.txt"), out, position=1,
            k=int(resolved.get("k", 1)), distance=int(resolved.get("distance", 3)),
            perturbation=resolved.get("perturbation", "random"), device="cpu",
        )  # fmt: skip
    assert not out.exists()


def test_the_command_writes_its_documented_files_deterministically(dirs) -> None:
    first, again = dirs["root"] / "out_ok", dirs["root"] / "out_again"
    result = invoke(dirs, out=first, samples=2)
    assert result.exit_code == 0, result.output
    assert "self-recovery: the perturbation raises" in result.stdout
    doc = json.loads((first / "measure.json").read_text())
    assert set(doc) <= set(doc["keys"]) and {"excess_kl", "trace_expert"} <= set(doc["quantities"])
    assert {c["verdict"] for c in doc["claims"]} <= {"holds", "does not hold", "inconclusive"}
    for name in doc["files"]:
        assert (first / name).is_file(), name
    page = (first / "report.html").read_text()
    assert page.index("self-recovery: the perturbation") < page.index("<img")  # finding first
    assert invoke(dirs, out=again, samples=2).exit_code == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(first / "results.parquet"), pd.read_parquet(again / "results.parquet")
    )
