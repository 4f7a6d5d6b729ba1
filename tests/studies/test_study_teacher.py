"""`irlhf study NAME --teacher DIR`: a user's local Hugging Face model as the teacher of every
text-world run of a study; a missing or malformed directory, or a study with no text-world runs,
is a one-line error (exit 2, nothing written)."""

from __future__ import annotations

import pytest
from test_degeneration_study import LINES, write_corpus
from typer.testing import CliRunner

from irlhf.cli import app
from irlhf.experiments import run_one
from irlhf.experiments.errors import ConfigError
from irlhf.kinds.degeneration import DegenerationConfig, EvalSpec, RLHFSpec, StudentSpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.studies.base import with_teacher
from irlhf.studies.degeneration import grid
from irlhf.worlds.text import TextSpec


def save_tiny_hf_teacher(path) -> None:
    """A 1-layer GPT-2 and its tokenizer, saved as Hugging Face saves them."""
    from irlhf.policies.causal_lm import CausalLMPolicy
    from irlhf.worlds.text import train_tokenizer

    tokenizer = train_tokenizer(LINES * 20, 280)
    policy = CausalLMPolicy.tiny(len(tokenizer), n_layer=1, n_embd=16, n_head=2, max_length=64)
    policy.model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_the_teacher_option_replaces_every_text_world_teacher_and_runs(tmp_path) -> None:
    save_tiny_hf_teacher(tmp_path / "hf")
    world = TextSpec(corpus=str(write_corpus(tmp_path)), prompt_length=8, horizon=40)
    evaluation = EvalSpec(n_prompts=4, mc_samples=4, n_sentences=2, max_repeats=2)
    student = StudentSpec(n_layer=1, n_embd=16, n_head=2)
    configs = grid(1, world, student, 8, 4, RLHFSpec(), evaluation, 4, ("teacher", "sft"))
    mixed = [*configs, ImitationConfig()]  # an automaton run is left alone
    replaced = with_teacher(mixed, tmp_path / "hf", "study test")
    assert [c.world.teacher_dir for c in replaced[:-1]] == [str(tmp_path / "hf")] * 2
    assert replaced[-1] == mixed[-1]
    for config in replaced[:-1]:
        result = run_one(config, tmp_path / "runs")
        assert result.status == "done", result.error
    teacher_run = run_one(replaced[0], tmp_path / "runs")
    assert teacher_run.skipped  # cached: the teacher directory is part of the run's identity
    assert replaced[0].world.teacher_dir != configs[0].world.teacher_dir


def test_a_bad_teacher_directory_or_a_study_without_text_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--teacher"):
        with_teacher([ImitationConfig()], tmp_path / "missing", "study x")
    save_tiny_hf_teacher(tmp_path / "hf")  # context 64
    long = TextSpec(corpus=str(tmp_path), prompt_length=16, horizon=64)
    with pytest.raises(ConfigError, match="context is 64 tokens, shorter than .* = 80"):
        with_teacher([DegenerationConfig(world=long)], tmp_path / "hf", "study x")
    with pytest.raises(ConfigError, match="text-world runs only"):
        with_teacher([ImitationConfig()], tmp_path / "hf", "study compounding")
    runner = CliRunner()
    out = tmp_path / "out"
    for teacher in (tmp_path / "missing", tmp_path / "hf"):
        result = runner.invoke(
            app, ["study", "compounding", "--teacher", str(teacher), "--out", str(out)]
        )
        assert result.exit_code == 2, result.output
        message = result.output.strip()
        assert message.startswith("error:") and "--teacher" in message
        assert len(message.splitlines()) == 1 and "Traceback" not in message
        assert not out.exists()


def test_a_model_replaced_in_the_same_directory_is_a_new_run(tmp_path) -> None:
    """Run ids follow the teacher's files, not its path: after the model in the directory is
    replaced, the same study config is a different run (before, the old results were reused)."""
    from irlhf.experiments.config import resolved, run_id
    from irlhf.policies.causal_lm import CausalLMPolicy

    save_tiny_hf_teacher(tmp_path / "hf")
    world = TextSpec(corpus=str(write_corpus(tmp_path)), prompt_length=8, horizon=40)
    config = DegenerationConfig(world=world)
    first = with_teacher([config], tmp_path / "hf", "study test")[0]
    assert first.world.teacher_digest is not None
    assert run_id(with_teacher([config], tmp_path / "hf", "study test")[0]) == run_id(first)
    # a config read back from a run's config.json keeps its id
    assert run_id(DegenerationConfig.model_validate(resolved(first))) == run_id(first)

    vocab = CausalLMPolicy.from_pretrained(tmp_path / "hf").vocab_size
    other = CausalLMPolicy.tiny(vocab, n_layer=1, n_embd=16, n_head=2, max_length=64, seed=7)
    other.model.save_pretrained(tmp_path / "hf")  # new weights, same directory
    second = with_teacher([config], tmp_path / "hf", "study test")[0]
    assert second.world.teacher_dir == first.world.teacher_dir
    assert second.world.teacher_digest != first.world.teacher_digest
    assert run_id(second) != run_id(first)
