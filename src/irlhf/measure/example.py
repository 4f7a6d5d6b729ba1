"""Models to try `irlhf measure` on, built in about a minute on two CPU cores: irlhf's Shakespeare
teacher (trained once and cached, `irlhf.worlds.text`), a 2 x 64 student fitted by SFT on the
teacher's samples, the same student after one round of RLHF (a neural Bradley-Terry reward model
on comparisons of the student's samples, RLOO from it, as the degeneration study's `rlhf` arm),
that reward model, and held-out prompts.

    from irlhf.measure import example
    models = example.teacher_and_students("measure-demo")

`irlhf measure example --out DIR` does the same from the shell. Everything is written as the
`measure` commands read it: Hugging Face directories (config.json, model.safetensors, the
teacher's tokenizer), an irlhf reward-model directory and a prompts .txt (one per line).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.kinds.degeneration import RLHFSpec, rlhf_round
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.worlds.base import Demonstrations
from irlhf.worlds.text import TextSpec, make_text_world, teacher_path


@dataclass(frozen=True)
class ExampleModels:
    """Where `teacher_and_students` put each piece (the teacher is the cached one)."""

    teacher: Path
    student: Path
    rlhf: Path
    reward: Path
    prompts: Path
    seconds: float


def teacher_and_students(
    out: str | Path,
    *,
    n_prompts: int = 64,
    demonstrations: int = 512,
    sft_steps: int = 200,
    seed: int = 0,
    spec: TextSpec = TextSpec(),
    rlhf: RLHFSpec = RLHFSpec(),
    root: Path | None = None,
) -> ExampleModels:
    """Build the models (module docstring) under OUT: student/, rlhf/, reward/, prompts.txt.

    The student and its RLHF'd copy see the teacher's samples and comparisons only (never the
    true reward): SFT on `demonstrations` teacher continuations (`sft_steps` AdamW steps of 16),
    then the degeneration study's RLHF round (128 comparisons by a Bradley-Terry annotator of the
    text world's reward, a reward model on the SFT student's backbone, 20 RLOO iterations).
    `spec`, `rlhf` and `root` (the data directory) are there for tests and variations."""
    started = time.perf_counter()
    out = Path(out)
    world = make_text_world(spec, root)
    generator = torch.Generator().manual_seed(seed)
    student = CausalLMPolicy.tiny(
        world.vocab_size, n_layer=2, n_embd=64, n_head=4,
        max_length=world.prompt_length + world.horizon, seed=seed,
    )  # fmt: skip
    demos = Demonstrations.collect(world, demonstrations, generator, world.temperature)
    sft = train_sft(student, demos, world.dynamics(), SFTConfig(steps=sft_steps, batch_size=16,
                                                               lr=3e-3), generator)  # fmt: skip
    sft_policy = sft.policy.eval()
    _save(sft_policy, world.tokenizer, out / "student")
    rl, _ = rlhf_round(rlhf, world, sft_policy, generator)
    _save(rl["policy"].eval(), world.tokenizer, out / "rlhf")
    rl["reward_model"].save(out / "reward", world.tokenizer)
    prompts = world.sample_prompts(n_prompts, torch.Generator().manual_seed(10_000 + seed))
    lines = [world.decode(row).replace("\n", " ").strip() for row in prompts]
    (out / "prompts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    teacher = spec.teacher_dir or teacher_path(spec.corpus, spec.teacher, root)
    return ExampleModels(
        teacher=Path(teacher),
        student=out / "student",
        rlhf=out / "rlhf",
        reward=out / "reward",
        prompts=out / "prompts.txt",
        seconds=time.perf_counter() - started,
    )


def _save(policy: CausalLMPolicy, tokenizer: object, path: Path) -> None:
    policy.save(path)
    tokenizer.save_pretrained(path)  # type: ignore[attr-defined]
