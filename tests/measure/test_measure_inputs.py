"""`irlhf measure exposure`'s inputs: every bad input of issue 15 is one line on stderr, exit
code 2 and nothing written; every prompt format reads the same prompts; the happy path writes
its documented files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification
from typer.testing import CliRunner

from irlhf.cli import app
from irlhf.measure.inputs import MeasureInputError, load_prompts, resolve_device
from irlhf.policies.causal_lm import CausalLMPolicy

from .hf_dirs import save_model, token_words, word_tokenizer

V = 10
runner = CliRunner()
PROMPTS = ["t1 t2", "t3", "t4 t5"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """expert, model, and the bad model directories and prompt files of the issue."""
    root = tmp_path_factory.mktemp("inputs")
    words = token_words(V)
    tiny = dict(n_layer=1, n_embd=8, n_head=2, max_length=8)
    save_model(CausalLMPolicy.tiny(V, seed=1, **tiny), root / "expert", words)
    save_model(CausalLMPolicy.tiny(V, seed=2, **tiny), root / "model", words)
    save_model(CausalLMPolicy.tiny(V, seed=2, **tiny), root / "other_tok", token_words(V, "w"))
    save_model(CausalLMPolicy.tiny(V + 6, seed=3, **tiny), root / "padded", words)
    save_model(CausalLMPolicy.tiny(V - 2, seed=3, **tiny), root / "short", words)
    malformed = root / "malformed"
    malformed.mkdir()
    (malformed / "config.json").write_text("{not json")
    classifier = GPT2ForSequenceClassification(
        GPT2Config(vocab_size=V, n_layer=1, n_embd=8, n_head=2, num_labels=1)
    )
    classifier.save_pretrained(root / "classifier")
    word_tokenizer(words).save_pretrained(root / "classifier")
    pickled = root / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((root / "model" / "config.json").read_text())
    torch.save({"w": torch.zeros(1)}, pickled / "pytorch_model.bin")
    word_tokenizer(words).save_pretrained(pickled)
    no_tok = root / "no_tokenizer"
    CausalLMPolicy.tiny(V, seed=2, **tiny).save(no_tok)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (root / "empty.txt").write_text("\n\n")
    (root / "binary.txt").write_bytes(b"\xff\xfe\x00\x81")
    (root / "bad.jsonl").write_text('{"prompt": "t1"}\n{oops\n')
    (root / "field.jsonl").write_text('{"text": "t1"}\n')
    (root / "long.txt").write_text("t1 t2 t3 t4 t5 t6 t7\n")
    return root


def invoke(root: Path, **overrides: object):
    options = {
        "expert": root / "expert",
        "model": root / "model",
        "prompts": root / "prompts.txt",
        "out": root / "out",
        "max-new-tokens": 2,
    } | overrides
    args = ["measure", "exposure"]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    return runner.invoke(app, args)


BAD = [
    ({"expert": "{root}/absent"}, "--expert {root}/absent does not exist"),
    ({"model": "{root}/malformed"}, "config.json is unreadable"),
    ({"model": "{root}/classifier"}, "is not a causal LM"),
    ({"model": "{root}/other_tok"}, "different tokenizers"),
    ({"model": "{root}/short"}, "the smaller does not cover the tokenizer's 10 ids"),
    ({"model": "{root}/pickled"}, "only pickle weights ['pytorch_model.bin']"),
    ({"model": "{root}/no_tokenizer"}, "has no tokenizer"),
    ({"prompts": "{root}/empty.txt"}, "holds no prompts"),
    ({"prompts": "{root}/absent.txt"}, "does not exist"),
    ({"prompts": "{root}/binary.txt"}, "is unreadable"),
    ({"prompts": "{root}/bad.jsonl"}, "line 2 is not JSON"),
    ({"prompts": "{root}/field.jsonl"}, "has no field 'prompt' (fields: 'text')"),
    ({"prompts": "{root}/long.txt"}, "exceeds the model's context of 8 tokens"),
    ({"decoding": "beam"}, "--decoding 'beam' is unknown"),
    ({"decoding": "top-k=0"}, "top_k must be >= 1"),
    ({"device": "tpu"}, "--device must be one of auto, cpu, cuda, mps"),
    ({"dtype": "int8"}, "--dtype must be one of float32, bfloat16, float16"),
    ({"samples": 0}, "--samples must be an integer >= 1"),
    ({"temperature": 0}, "--temperature must be > 0"),
]


@pytest.mark.parametrize(("overrides", "fragment"), BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(root: Path, overrides, fragment) -> None:
    out = root / "out_bad"
    resolved = {k: str(v).format(root=root) for k, v in overrides.items()}
    result = invoke(root, out=out, **resolved)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment.format(root=root) in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_every_prompt_format_reads_the_same_prompts(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = [{"prompt": p, "other": i} for i, p in enumerate(PROMPTS)]
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n\n")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "dataset"))
    for name in ("p.txt", "p.jsonl", "p.json", "p.parquet", "dataset"):
        assert load_prompts(tmp_path / name) == PROMPTS, name
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"q": p}) + "\n" for p in PROMPTS))
    assert load_prompts(tmp_path / "q.jsonl", "q") == PROMPTS
    with pytest.raises(MeasureInputError, match="choose one with --prompt-field"):
        load_prompts(tmp_path / "p.parquet", "q")
    with pytest.raises(MeasureInputError, match="unknown format"):
        (tmp_path / "p.csv").write_text("prompt\nt1\n")
        load_prompts(tmp_path / "p.csv")


def test_device_auto_resolves_to_an_available_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_the_command_writes_its_documented_files(root: Path) -> None:
    out = root / "out_ok"
    result = invoke(root, out=out, decoding="greedy", samples=2, device="cpu")
    assert result.exit_code == 0, result.output
    assert "exposure bias (greedy)" in result.stdout
    doc = json.loads((out / "measure.json").read_text())
    assert set(doc) <= set(doc["keys"]) and set(doc["quantities"]) >= {"eps", "R", "acc_err"}
    for name in doc["files"]:
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text()
    assert page.index("exposure bias (greedy)") < page.index("<img")  # the finding first
    again = root / "out_again"
    assert invoke(root, out=again, decoding="greedy", samples=2, device="cpu").exit_code == 0
    first = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(first, pd.read_parquet(again / "results.parquet"))


def test_a_model_padded_beyond_the_tokenizer_is_compared_over_the_shared_ids(root: Path) -> None:
    out = root / "out_padded"
    result = invoke(root, out=out, model=root / "padded", device="cpu")
    assert result.exit_code == 0, result.output
    samples = pd.read_parquet(out / "samples.parquet")
    assert max(max(ids) for ids in samples.completion_ids) < V


def test_adding_a_decoding_changes_no_other_decodings_numbers(root: Path) -> None:
    from irlhf.measure import measure_exposure

    common = dict(max_new_tokens=3, samples=2, seed=4, device="cpu", n_bootstrap=50)
    one = measure_exposure(root / "expert", root / "model", PROMPTS, root / "one", **common)
    two = measure_exposure(
        root / "expert", root / "model", PROMPTS, root / "two",
        decodings=("greedy", "sample"), **common,
    )  # fmt: skip
    sample = [r for r in two["at_L"] if r["decoding"] in ("sample", "expert")]
    assert sample == one["at_L"]
