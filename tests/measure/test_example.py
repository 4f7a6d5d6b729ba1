"""`irlhf.measure.example`: the teacher, SFT student, RLHF'd student, reward model and prompts it
writes are what the measure commands read (a tiny corpus and teacher, nothing downloaded)."""

from __future__ import annotations

import torch
from tests.worlds.test_text import TEACHER, write_corpus

from irlhf.algorithms.reward_model import NeuralRewardModel, RewardModelConfig
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.kinds.degeneration import RLHFSpec
from irlhf.measure import example, measure_exposure
from irlhf.measure.inputs import load_model, load_prompts
from irlhf.worlds.text import TextSpec


def test_the_example_models_load_and_measure(tmp_path):
    spec = TextSpec(corpus=str(write_corpus(tmp_path)), teacher=TEACHER, prompt_length=6,
                    horizon=20)  # fmt: skip
    rlhf = RLHFSpec(
        comparisons=8,
        reward_model=RewardModelConfig(kind="neural", steps=3, batch_size=4),
        rloo=RLOOConfig(iterations=2, prompts_per_iteration=2, samples_per_prompt=2),
    )
    got = example.teacher_and_students(
        tmp_path / "demo", n_prompts=5, demonstrations=8, sft_steps=3, spec=spec, rlhf=rlhf,
        root=tmp_path / "data",
    )  # fmt: skip
    teacher, _ = load_model(got.teacher, "--expert")
    student, _ = load_model(got.student, "--model")
    tuned, _ = load_model(got.rlhf, "--model")
    assert teacher.vocab_size == student.vocab_size == tuned.vocab_size
    # RLOO moved the student: the RLHF'd weights are not the SFT ones
    assert any(
        not torch.equal(a, b) for a, b in zip(student.parameters(), tuned.parameters(), strict=True)
    )
    reward = NeuralRewardModel.load(got.reward)
    assert len(reward.members) == 1
    assert len(load_prompts(got.prompts)) == 5
    result = measure_exposure(got.teacher, got.student, got.prompts, tmp_path / "out",
                              max_new_tokens=8, n_bootstrap=50)  # fmt: skip
    eps = {r["quantity"]: r["value"] for r in result["at_L"] if r["decoding"] == "sample"}["eps"]
    assert eps > 0  # a 3-step student is not its teacher
