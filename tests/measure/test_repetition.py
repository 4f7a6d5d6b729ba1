"""measure_repetition against Xu et al. 2022's and the degeneration metrics' definitions.

- A GPT-2 built by hand to repeat its last token (one-hot embeddings, no positions, attention
  and MLP outputs zeroed) gives a closed-form TP that does not change with the number of
  repeats, and IP = WR = 0 exactly: repetition does not self-reinforce there.
- On a random tiny GPT-2, TP, IP and WR agree with a plain loop over full forwards, and every
  degeneration metric equals irlhf.metrics.degeneration applied to all the continuations
  measure_repetition wrote; a bootstrap replicate (prompts drawn with given counts) equals the
  library metric on the resampled continuations.
- Bad inputs are one line, exit code 2 and nothing written.
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
from irlhf.measure import MeasureInputError, measure_repetition
from irlhf.measure.repetition import METRICS, degeneration, distinct_jackknife, pool
from irlhf.metrics import degeneration as dg
from irlhf.policies.causal_lm import CausalLMPolicy

from .hf_dirs import save_model, token_words

V = 12
SCALE = 1.0  # the copier's embedding norm: p(repeat) = 0.77, not ~1
SENTENCES = ["t3 t3 t5", "t1 t2 t4 t4"]
PROMPTS = ["t1 t2", "t3 t4", "t5 t6 t7"]
runner = CliRunner()


def _copier() -> CausalLMPolicy:
    """A GPT-2 whose next token is its last token, most likely: the residual stream is the
    last token's one-hot embedding (no positions, attention and MLP add 0), read out by the
    tied embeddings."""
    policy = CausalLMPolicy.tiny(V, n_layer=1, n_embd=V, n_head=2, max_length=32, seed=0)
    gpt = policy.model.transformer
    with torch.no_grad():
        gpt.wte.weight.copy_(SCALE * torch.eye(V))
        gpt.wpe.weight.zero_()
        for block in gpt.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    return policy


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repetition")
    words = token_words(V)
    model = CausalLMPolicy.tiny(V, n_layer=1, n_embd=16, n_head=2, max_length=32, seed=2)
    (root / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    (root / "empty.txt").write_text("\n\n")
    (root / "short.txt").write_text("t1\n")
    (root / "long.txt").write_text(" ".join(["t1"] * 10) + "\n")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {
        "root": root,
        "model": save_model(model, root / "model", words),
        "copier": save_model(_copier(), root / "copier", words),
    }


def test_a_model_that_repeats_its_last_token_does_not_self_reinforce(dirs, tmp_path) -> None:
    out = tmp_path / "copier"
    doc = measure_repetition(
        dirs["copier"], out, sentences=dirs["root"] / "sentences.txt", max_repeats=4,
        max_new_tokens=6, device="cpu", n_bootstrap=50,
    )  # fmt: skip
    # by hand: ln_f(c e_x) = c (e_x - 1/V) / sigma, read out by the tied embeddings c I: the
    # logit gap between the repeated token and any other is c^2 / sigma
    sigma = math.sqrt(SCALE**2 * (1 / V) * (1 - 1 / V) + 1e-5)  # GPT-2's layer-norm eps 1e-5
    gap = SCALE**2 / sigma
    same = math.exp(gap) / (math.exp(gap) + V - 1)
    other = 1.0 / (math.exp(gap) + V - 1)
    # each copy scores its tokens 2.. (the first has no context without a prefix):
    # "t3 t3 t5": t3 after t3, t5 after t3; "t1 t2 t4 t4": t2 after t1, t4 after t2, t4 after t4
    expected_tp = ((same + other) / 2 + (other + other + same) / 3) / 2
    results = pd.read_parquet(out / "results.parquet")
    sr = results[results.section == "self_reinforcement"]
    for n in range(1, 5):
        at = sr[sr.n_repeats == n].set_index("quantity").value
        assert at["tp"] == pytest.approx(expected_tp, rel=1e-5)
        assert at["ip"] == 0.0 and at["wr"] == 0.0 and at["tp_rise"] == 0.0
    verdicts = {c["claim"].split(":")[0]: c["verdict"] for c in doc["claims"]}
    assert verdicts["Repetition self-reinforces"] == "does not hold"
    # the copier's greedy continuation repeats the prompt's last token: every one is a loop
    samples = pd.read_parquet(out / "samples.parquet")
    greedy = samples[samples.decoding == "greedy"]
    for i, ids in zip(greedy.prompt_index, greedy.completion_ids, strict=True):
        last = int(SENTENCES[i].split()[-1][1:])
        assert list(ids) == [last] * 6
    assert doc["inputs"]["prompts"].startswith("(the sentences")


def _probs(policy: CausalLMPolicy, tokens: list[int]) -> np.ndarray:
    """[T, V] float64 next-token distributions after each prefix, by full forwards."""
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([tokens])).logits[0].double()
    return torch.softmax(logits, -1).numpy()


def test_measure_repetition_agrees_with_plain_loops_and_the_library(dirs, tmp_path) -> None:
    out, N = tmp_path / "model", 3
    measure_repetition(
        dirs["model"], out, prompts=PROMPTS, sentences=SENTENCES, max_repeats=N,
        max_new_tokens=10, samples=3, seed=4, device="cpu", n_bootstrap=100,
    )  # fmt: skip
    model = CausalLMPolicy.from_pretrained(dirs["model"]).eval()
    results = pd.read_parquet(out / "results.parquet")
    sr = results[results.section == "self_reinforcement"]
    tp, ip, wr = np.zeros((len(SENTENCES), N)), np.zeros((len(SENTENCES), N)), np.zeros((2, N))
    for i, text in enumerate(SENTENCES):
        s = [int(w[1:]) for w in text.split()]
        probs = _probs(model, s * N)
        first = None
        for n in range(N):
            # token j of copy n is predicted at position n * len(s) + j - 1
            p = [probs[n * len(s) + j - 1, s[j]] for j in range(1, len(s))]
            top = [probs[n * len(s) + j - 1].argmax() == s[j] for j in range(1, len(s))]
            first = p if first is None else first
            rose = [a > b for a, b in zip(p, first, strict=True)]
            tp[i, n] = np.mean(p)
            ip[i, n] = np.mean(rose)
            wr[i, n] = np.mean([r and t for r, t in zip(rose, top, strict=True)])
    for name, values in (("tp", tp), ("ip", ip), ("wr", wr)):
        got = sr[sr.quantity == name].sort_values("n_repeats").value.to_numpy()
        np.testing.assert_allclose(got, values.mean(axis=0), rtol=1e-5, atol=1e-7)
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == len(PROMPTS) * (1 + 3)
    library = {
        "loop_rate": dg.loop_rate, "soft_loop_rate": dg.soft_loop_rate,
        "seq_rep_2": lambda x: dg.seq_rep_n(x, 2), "seq_rep_4": lambda x: dg.seq_rep_n(x, 4),
        "rep_1": lambda x: dg.rep_n(x, 1, 64), "distinct_1": lambda x: dg.distinct_n(x, 1),
        "distinct_2": lambda x: dg.distinct_n(x, 2), "distinct_4": lambda x: dg.distinct_n(x, 4),
    }  # fmt: skip
    assert set(library) == set(METRICS)
    deg = results[results.section == "degeneration"].set_index(["decoding", "quantity"])
    for metric, fn in library.items():
        values = {}
        for decoding in ("greedy", "sample"):
            seqs = [list(x) for x in samples[samples.decoding == decoding].completion_ids]
            values[decoding] = fn(seqs)
            row = deg.loc[(decoding, metric)]
            assert row.value == pytest.approx(values[decoding], abs=1e-12), (decoding, metric)
            assert row.ci_low <= row.value + 1e-12 <= row.ci_high + 2e-12
        paired = deg.loc[("greedy - sample", metric)].value
        assert paired == pytest.approx(values["greedy"] - values["sample"], abs=1e-12)

    # one bootstrap replicate by hand: prompt 0 twice, prompt 2 once, prompt 1 never
    sampled = samples[samples.decoding == "sample"]
    counts = np.array([2, 0, 1])
    replicate = degeneration(counts[None] / counts.sum(), pool(sampled.to_dict("records"), 3))
    resampled = [list(x) for i, c in enumerate(counts) for _ in range(c)
                 for x in sampled[sampled.prompt_index == i].completion_ids]  # fmt: skip
    for metric, fn in library.items():
        assert replicate[metric][0] == pytest.approx(fn(resampled), abs=1e-12), metric

    # distinct-n's interval: the delete-one-prompt jackknife, by a plain loop over the library
    greedy = samples[samples.decoding == "greedy"]
    per = {
        d: pool(samples[samples.decoding == d].to_dict("records"), 3) for d in ("greedy", "sample")
    }
    jack = distinct_jackknife(per)
    for n in (1, 2, 4):
        left_out = np.array([
            dg.distinct_n([list(x) for x in greedy[greedy.prompt_index != i].completion_ids], n)
            for i in range(3)
        ])  # fmt: skip
        se = math.sqrt(2 / 3 * ((left_out - left_out.mean()) ** 2).sum())
        value, low, high = (float(a[0]) for a in jack[f"greedy:distinct_{n}"])
        assert value == pytest.approx(
            library[f"distinct_{n}"]([list(x) for x in greedy.completion_ids])
        )
        assert low == pytest.approx(value - 1.959964 * se, abs=1e-6)
        assert high == pytest.approx(value + 1.959964 * se, abs=1e-6)
        row = deg.loc[("greedy", f"distinct_{n}")]
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high), abs=1e-12)


def invoke(dirs: dict[str, Path], **overrides: object):
    options = {
        "model": dirs["model"], "prompts": dirs["root"] / "prompts.txt",
        "sentences": dirs["root"] / "sentences.txt", "out": dirs["root"] / "out",
        "max-repeats": 3, "max-new-tokens": 6, "device": "cpu",
    } | overrides  # fmt: skip
    args = ["measure", "repetition"]
    for key, value in options.items():
        if value is not None:
            args += [f"--{key}", str(value)]
    return runner.invoke(app, args)


BAD = [
    ({"model": "{root}/absent"}, "--model {root}/absent does not exist"),
    ({"sentences": "{root}/empty.txt"}, "--sentences {root}/empty.txt holds no prompts"),
    ({"sentences": "{root}/absent.txt"}, "--sentences {root}/absent.txt does not exist"),
    ({"sentences": "{root}/short.txt"}, "sentence 0 ('t1') has 1 tokens"),
    ({"sentences": "{root}/long.txt"}, "4 repeats exceed the model's context of 32 tokens"),
    ({"prompts": None, "sentences": None}, "give --prompts, --sentences or both"),
    ({"max-repeats": 1}, "--max-repeats must be an integer >= 2"),
]


@pytest.mark.parametrize(("overrides", "fragment"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(dirs, overrides, fragment) -> None:
    out = dirs["root"] / "out_bad"
    resolved = {k: None if v is None else str(v).format(root=dirs["root"])
                for k, v in overrides.items()}  # fmt: skip
    if "long" in str(resolved.get("sentences")):
        resolved["max-repeats"] = "4"
    result = invoke(dirs, out=out, **resolved)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment.format(root=dirs["root"]) in lines[0], lines[0]
    assert not out.exists()


def test_the_function_raises_before_writing(dirs, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(MeasureInputError, match="holds no prompts"):
        measure_repetition(dirs["model"], out, sentences=dirs["root"] / "empty.txt")
    with pytest.raises(MeasureInputError, match=r"--prompts \(the sentences\): sentence 0"):
        measure_repetition(dirs["model"], out, prompts=["t1"], max_new_tokens=6, device="cpu")
    with pytest.raises(MeasureInputError, match="leaves no room for a prompt in the model's"):
        measure_repetition(dirs["model"], out, prompts=PROMPTS, max_new_tokens=32, device="cpu")
    assert not out.exists()


def test_the_command_writes_its_documented_files_deterministically(dirs) -> None:
    first, again = dirs["root"] / "out_ok", dirs["root"] / "out_again"
    result = invoke(dirs, out=first, samples=2)
    assert result.exit_code == 0, result.output
    assert "repetition: after 3 repeats of a sentence" in result.stdout
    doc = json.loads((first / "measure.json").read_text())
    assert set(doc) <= set(doc["keys"]) and set(METRICS) <= set(doc["quantities"])
    assert doc["sentences"] == SENTENCES
    for name in doc["files"]:
        assert (first / name).is_file(), name
    page = (first / "report.html").read_text()
    assert page.index("repetition: after 3 repeats") < page.index("<img")  # finding first
    assert "NaN" not in (first / "measure.json").read_text()
    assert invoke(dirs, out=again, samples=2).exit_code == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(first / "results.parquet"), pd.read_parquet(again / "results.parquet")
    )


def test_a_prompt_too_long_for_n_copies_is_cut_to_fit_when_it_is_the_sentence(dirs, tmp_path):
    """No --sentences: a 10-token prompt, 4 copies, a context of 32: the sentence is its first
    32 // 4 = 8 tokens, with a note; the numbers equal those of passing those 8 tokens as the
    sentence (an explicit sentence that does not fit stays an error: BAD above)."""
    words = [f"t{i % V}" for i in range(1, 11)]
    prompt = " ".join(words)
    common = {"max_repeats": 4, "max_new_tokens": 6, "device": "cpu", "n_bootstrap": 20}
    cut = measure_repetition(dirs["model"], tmp_path / "cut", prompts=[prompt], **common)
    given = measure_repetition(dirs["model"], tmp_path / "given", prompts=[prompt],
                               sentences=[" ".join(words[:8])], **common)  # fmt: skip
    assert "1 of 1 cut to their first 8 tokens" in cut["inputs"]["sentences"]
    assert any("cut to their first 8 tokens" in n for n in cut["notes"])

    def reinforcement(out: Path) -> pd.DataFrame:
        table = pd.read_parquet(out / "results.parquet")
        return table[table["quantity"].isin(["tp", "ip", "wr"])].reset_index(drop=True)

    got = reinforcement(tmp_path / "cut")
    assert len(got) >= 3 * 4  # tp, ip, wr at n = 1..4
    pd.testing.assert_frame_equal(got, reinforcement(tmp_path / "given"))
    assert given["inputs"]["sentences"] == "(a list of strings)"
