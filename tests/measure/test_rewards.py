"""`measure_rewards` against plain loops: each continuation's score recomputed by calling the
reward model on that one sequence; means, quantiles and win rates recomputed with Python sums
from those scores; a model against itself wins exactly half; bad inputs are one line and leave
nothing behind. Tiny local models (tests/measure/hf_dirs.py), nothing downloaded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

from irlhf.algorithms.reward_model import NeuralRewardModel, RewardModelConfig
from irlhf.measure.inputs import MeasureInputError
from irlhf.measure.rewards import measure_rewards
from irlhf.measure.rewards_report import weighted_quantiles, win_fractions
from irlhf.policies.causal_lm import CausalLMPolicy

from .hf_dirs import save_model, token_words, word_tokenizer

V, L = 12, 4
PROMPTS = ["t1 t2", "t3", "t4 t5 t6", "t7 t8", "t9", "t0 t1 t2"]
TINY = dict(n_layer=1, n_embd=16, n_head=2, max_length=16)


def _classifier(path: Path, tokenizer: PreTrainedTokenizerFast, labels: int = 1) -> Path:
    """A random one-layer GPT-2 sequence classifier saved as safetensors beside `tokenizer`."""
    torch.manual_seed(labels)
    config = GPT2Config(
        vocab_size=V, n_layer=1, n_embd=16, n_head=2, n_positions=16, num_labels=labels,
        pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    GPT2ForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def _irlhf_reward(path: Path, tokenizer: PreTrainedTokenizerFast) -> Path:
    config = RewardModelConfig(kind="neural", n_layer=1, n_embd=16, n_head=2, seed=3)
    backbone = CausalLMPolicy.tiny(V, seed=4, **TINY)
    NeuralRewardModel(None, config, [backbone]).save(path, tokenizer)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rewards")
    words = token_words(V)
    save_model(CausalLMPolicy.tiny(V, seed=1, **TINY), root / "sft", words)
    save_model(CausalLMPolicy.tiny(V, seed=2, **TINY), root / "rlhf", words)
    save_model(CausalLMPolicy.tiny(V, seed=2, **TINY), root / "other_tok", token_words(V, "w"))
    _classifier(root / "classifier", word_tokenizer(words))
    # the same words under other ids: a classifier with a tokenizer of its own
    _classifier(root / "own_tokenizer", word_tokenizer(words[::-1]))
    _classifier(root / "two_labels", word_tokenizer(words), labels=2)
    _irlhf_reward(root / "irlhf_rm", word_tokenizer(words))
    _irlhf_reward(root / "irlhf_other_tok", word_tokenizer(token_words(V, "w")))
    (root / "malformed").mkdir()
    (root / "malformed" / "config.json").write_text("{not json")
    (root / "empty_dir").mkdir()
    (root / "empty.txt").write_text("\n\n")
    return root


def _ids(text: str) -> list[int]:
    return [int(word[1:]) for word in text.split()]


def _check_statistics(doc: dict, scores: np.ndarray) -> None:
    """Means, medians and win rates in measure.json against Python sums over `scores` [M, n, N]
    (the plain loop's)."""
    M, n, N = scores.shape
    per_model = {(r["model"][:3], r["quantity"]): r for r in doc["per_model"]}
    for m in range(M):
        mean = sum(sum(scores[m, i]) / N for i in range(n)) / n
        assert per_model[(f"[{m}]", "mean")]["value"] == pytest.approx(mean, abs=1e-6)
        ordered = sorted(scores[m].reshape(-1))
        median = ordered[math.ceil(0.5 * n * N) - 1]  # inverted CDF: the smallest with F >= 1/2
        assert per_model[(f"[{m}]", "median")]["value"] == pytest.approx(median, abs=1e-6)
        row = per_model[(f"[{m}]", "mean")]
        assert row["ci_low"] <= mean + 1e-9 and mean - 1e-9 <= row["ci_high"]
    wins = {(r["model"][:3], r["versus"][:3]): r["win_rate"] for r in doc["win_rates"]}
    for a in range(M):
        for b in range(M):
            if a != b:
                total = 0.0
                for i in range(n):
                    for j in range(N):
                        for k in range(N):
                            x, y = scores[a, i, j], scores[b, i, k]
                            total += 1.0 if x > y else 0.5 if x == y else 0.0
                assert wins[(f"[{a}]", f"[{b}]")] == pytest.approx(total / (n * N * N), abs=1e-12)


def _scores_array(samples: pd.DataFrame, column: str) -> np.ndarray:
    M, n, N = samples.model_index.max() + 1, len(PROMPTS), samples["sample"].max() + 1
    scores = np.zeros((M, n, N))
    for row in samples.itertuples():
        scores[row.model_index, row.prompt_index, row.sample] = getattr(row, column)
    return scores


def test_classifier_scores_equal_a_plain_loop(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = measure_rewards(
        root / "classifier", [root / "sft", root / "rlhf"], PROMPTS, out, max_new_tokens=L,
        samples=3, seed=7, batch_size=4, device="cpu", n_bootstrap=100,
    )  # fmt: skip
    assert doc["inputs"]["reward_reads"] == "token ids"
    classifier = GPT2ForSequenceClassification.from_pretrained(root / "classifier").eval()
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 2 * len(PROMPTS) * 3
    plain = []
    with torch.no_grad():
        for row in samples.itertuples():
            ids = _ids(PROMPTS[row.prompt_index]) + list(row.completion_ids)
            plain.append(float(classifier(input_ids=torch.tensor([ids])).logits[0, 0]))
    np.testing.assert_allclose(samples.score, plain, rtol=1e-5, atol=1e-6)
    samples["plain"] = plain
    _check_statistics(doc, _scores_array(samples, "plain"))
    assert json.loads((out / "measure.json").read_text()) == doc
    for name in doc["files"]:
        assert (out / name).is_file(), name
    assert set(doc) <= set(doc["keys"])
    page = (out / "report.html").read_text()
    assert page.index("beats") < page.index("<img")  # the finding before the figures


def test_a_classifier_with_its_own_tokenizer_scores_the_re_tokenized_text(
    root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    doc = measure_rewards(
        root / "own_tokenizer", [root / "sft"], PROMPTS, out, max_new_tokens=L, samples=2,
        seed=1, device="cpu", n_bootstrap=50,
    )  # fmt: skip
    assert doc["inputs"]["reward_reads"] == "re-tokenized text"
    classifier = GPT2ForSequenceClassification.from_pretrained(root / "own_tokenizer").eval()
    own_ids = {f"t{i}": V - 1 - i for i in range(V)}  # words reversed: t0 is id 11
    samples = pd.read_parquet(out / "samples.parquet")
    plain = []
    with torch.no_grad():
        for row in samples.itertuples():
            words = PROMPTS[row.prompt_index].split() + [f"t{i}" for i in row.completion_ids]
            ids = [own_ids[w] for w in words]
            plain.append(float(classifier(input_ids=torch.tensor([ids])).logits[0, 0]))
    np.testing.assert_allclose(samples.score, plain, rtol=1e-5, atol=1e-6)


def test_an_irlhf_reward_model_scores_equal_its_head_on_the_last_hidden_state(
    root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    doc = measure_rewards(
        root / "irlhf_rm", [root / "sft", root / "rlhf"], PROMPTS, out, max_new_tokens=L,
        samples=2, seed=3, device="cpu", n_bootstrap=50,
    )  # fmt: skip
    assert doc["inputs"]["reward_kind"] == "irlhf"
    member = NeuralRewardModel.load(root / "irlhf_rm").members[0].eval()
    samples = pd.read_parquet(out / "samples.parquet")
    plain = []
    with torch.no_grad():  # InstructGPT's reward: the head at the last token, by hand
        for row in samples.itertuples():
            ids = _ids(PROMPTS[row.prompt_index]) + list(row.completion_ids)
            hidden = member.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            plain.append(float(member.head(hidden)[0]))
    np.testing.assert_allclose(samples.score, plain, rtol=1e-5, atol=1e-6)
    samples["plain"] = plain
    _check_statistics(doc, _scores_array(samples, "plain"))


def test_a_model_against_itself_wins_exactly_half(root: Path, tmp_path: Path) -> None:
    """Common random numbers: both copies draw the same continuations, every comparison
    set is symmetric, so W = 1/2 in every bootstrap replicate too."""
    doc = measure_rewards(
        root / "classifier", [root / "sft", root / "sft"], PROMPTS, tmp_path / "out",
        max_new_tokens=L, samples=3, seed=2, device="cpu", n_bootstrap=100,
    )  # fmt: skip
    samples = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    first, second = samples[samples.model_index == 0], samples[samples.model_index == 1]
    assert first.completion.tolist() == second.completion.tolist()
    for row in doc["win_rates"]:
        assert (row["win_rate"], row["ci_low"], row["ci_high"]) == (0.5, 0.5, 0.5)
        assert row["mean_difference"] == 0.0
    assert [c["verdict"] for c in doc["claims"]] == ["does not hold"]


def test_win_fractions_and_quantiles_by_hand() -> None:
    # one prompt, two samples each: a = (1, 2), b = (2, 3); a beats b in 0 pairs, ties once
    scores = np.array([[[1.0, 2.0]], [[2.0, 3.0]]])
    wins = win_fractions(scores)[:, :, 0]
    np.testing.assert_allclose(wins, [[0.5, 0.5 / 4], [1 - 0.5 / 4, 0.5]])
    # two prompts; weights (1, 0) keep prompt 0 only: median of (5, 1, 3) = 3
    values = np.array([[5.0, 1.0, 3.0], [0.0, 9.0, 9.0]])
    assert weighted_quantiles(np.array([[1.0, 0.0]]), values, 0.5)[0] == 3.0
    uniform = np.full((1, 2), 0.5)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        expected = np.quantile(values, q, method="inverted_cdf")
        assert weighted_quantiles(uniform, values, q)[0] == expected


BAD = [
    ({"reward_dir": "{root}/absent"}, "--reward {root}/absent does not exist"),
    ({"reward_dir": "{root}/malformed"}, "config.json is unreadable"),
    ({"reward_dir": "{root}/empty_dir"}, "has no config.json"),
    ({"reward_dir": "{root}/two_labels"}, "has 2 labels; a reward model scores with one"),
    ({"reward_dir": "{root}/sft"}, "is not a sequence classifier"),
    ({"reward_dir": "{root}/irlhf_other_tok"}, "--reward and --models have different tokenizers"),
    ({"model_dirs": []}, "--models: give at least one model directory"),
    ({"model_dirs": ["{root}/sft", "{root}/other_tok"]}, "different tokenizers"),
    ({"prompts": []}, "--prompts: expected at least one non-empty string"),
    ({"prompts": "{root}/empty.txt"}, "holds no prompts"),
    ({"decoding": "beam"}, "--decoding 'beam' is unknown"),
    ({"samples": 0}, "--samples must be an integer >= 1"),
]


@pytest.mark.parametrize(("overrides", "fragment"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(root: Path, tmp_path: Path, overrides, fragment):
    def fill(value):
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value.format(root=root) if isinstance(value, str) else value

    arguments = {
        "reward_dir": root / "classifier", "model_dirs": [root / "sft"], "prompts": PROMPTS,
        "out_dir": tmp_path / "out", "max_new_tokens": L, "device": "cpu",
    } | {k: fill(v) for k, v in overrides.items()}  # fmt: skip
    with pytest.raises(MeasureInputError) as caught:
        measure_rewards(**arguments)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and fragment.format(root=root) in message, message
    assert not (tmp_path / "out").exists()


def test_the_command_prints_its_finding_or_one_line_exit_2(root: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from irlhf.cli import app

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    common = ["--models", str(root / "sft"), "--models", str(root / "rlhf"),
              "--prompts", str(prompts), "--max-new-tokens", "4"]  # fmt: skip
    runner = CliRunner()
    good = runner.invoke(app, ["measure", "rewards", "--reward", str(root / "classifier"),
                               *common, "--out", str(tmp_path / "good")])  # fmt: skip
    assert good.exit_code == 0, good.output
    assert "beats" in good.output and (tmp_path / "good" / "measure.json").is_file()
    bad = runner.invoke(app, ["measure", "rewards", "--reward", str(root / "two_labels"),
                              *common, "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code == 2
    assert len(bad.output.strip().splitlines()) == 1 and "label" in bad.output
    assert not (tmp_path / "bad").exists()
