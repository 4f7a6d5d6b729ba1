"""GKD (on-policy distillation): every batch's source, the lmbda = 0 limit, the realised
on-policy fraction, the oracle's budget, and that it learns in the automaton."""

from __future__ import annotations

import pytest
import torch

from irlhf.algorithms.gkd import GKDConfig, train_gkd
from irlhf.algorithms.sft import SFTConfig, fit_neural
from irlhf.policies import TabularPolicy
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.worlds import Demonstrations, ExpertOracle, make_world


def setup(horizon: int = 8, n_demos: int = 16, seed: int = 0):
    world = make_world("recoverable", horizon=horizon, seed=seed)
    demos = Demonstrations.collect(world, n_demos, torch.Generator().manual_seed(seed))
    student = CausalLMPolicy.tiny(
        world.token_vocab_size, world.vocab_size, n_layer=1, n_embd=16, n_head=2,
        max_length=horizon + 1, seed=seed,
    )  # fmt: skip
    return world, demos, student


class Spy:
    """Records what the student sampled and what the oracle was asked to label."""

    def __init__(self, student: CausalLMPolicy, oracle: ExpertOracle, monkeypatch) -> None:
        self.sampled, self.labelled = [], []
        sample, label = student.sample, oracle.label

        def spy_sample(*args, **kwargs):
            seqs = sample(*args, **kwargs)
            self.sampled.append(seqs.tokens.clone())
            return seqs

        def spy_label(seqs, *args, **kwargs):
            self.labelled.append(seqs.tokens.clone())
            return label(seqs, *args, **kwargs)

        monkeypatch.setattr(student, "sample", spy_sample)
        monkeypatch.setattr(oracle, "label", spy_label)


def test_with_lmbda_1_every_batch_is_a_fresh_student_sample(monkeypatch) -> None:
    world, demos, student = setup()
    oracle = ExpertOracle(world)
    spy = Spy(student, oracle, monkeypatch)
    steps, batch = 12, 4
    config = GKDConfig(steps=steps, batch_size=batch, lmbda=1.0)
    train_gkd(student, demos, oracle, world.dynamics(), config, torch.Generator().manual_seed(1))
    # one sample per step, each labelled as drawn: the oracle saw exactly the sampled batches
    assert len(spy.sampled) == len(spy.labelled) == steps
    for sampled, labelled in zip(spy.sampled, spy.labelled, strict=True):
        assert torch.equal(sampled, labelled)
    demo_rows = {tuple(r) for r in demos.sequences.tokens.tolist()}
    assert not any(tuple(r) in demo_rows for s in spy.labelled for r in s.tolist())
    assert oracle.queries == steps * batch * world.horizon  # fresh labels every step


def test_with_lmbda_0_gkd_is_sft_on_soft_labels() -> None:
    """Same generator, same batches: the losses and the weights equal `fit_neural` on the
    demonstrations relabelled with the expert's distributions."""
    world, demos, student = setup()
    _, _, twin = setup()
    steps = 15
    gkd = GKDConfig(steps=steps, batch_size=4, lmbda=0.0, beta=0.3, lr=1e-2)
    records = train_gkd(
        student, demos, ExpertOracle(world), world.dynamics(), gkd, torch.Generator().manual_seed(2)
    ).records
    labels = ExpertOracle(world).label(demos.sequences, soft=True)
    sft = SFTConfig(steps=steps, batch_size=4, lr=1e-2, jsd_beta=0.3)
    expected = fit_neural(twin, [labels], sft, torch.Generator().manual_seed(2))
    losses = [r["loss/jsd"] for r in records if "loss/jsd" in r]
    assert losses == pytest.approx([r["loss/jsd"] for r in expected], rel=1e-6, abs=1e-7)
    for a, b in zip(student.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_realised_on_policy_fraction_is_lmbda_and_queries_are_counted(monkeypatch) -> None:
    """200 steps at lmbda = 0.3 (systematic coin: within 1/200 of 0.3 whatever the seed);
    the fraction is counted from the sampler, not from the algorithm's records."""
    world, demos, student = setup(horizon=4)
    oracle = ExpertOracle(world)
    spy = Spy(student, oracle, monkeypatch)
    config = GKDConfig(steps=200, batch_size=2, lmbda=0.3, log_every=50)
    records = train_gkd(
        student, demos, oracle, world.dynamics(), config, torch.Generator().manual_seed(3)
    ).records
    fraction = len(spy.sampled) / 200
    assert abs(fraction - 0.3) <= 0.05
    logged = [r["gkd/on_policy_fraction"] for r in records if "gkd/on_policy_fraction" in r]
    assert len(logged) == 4 and sum(logged) / 4 == pytest.approx(fraction)
    # queries: every on-policy batch, and each demonstration once, the first time it is drawn
    demo_labelled = sum(len(t) for t in spy.labelled) - 2 * len(spy.sampled)
    assert demo_labelled <= demos.n
    assert oracle.queries == (2 * len(spy.sampled) + demo_labelled) * world.horizon


def test_seq_kd_draws_teacher_samples_and_charges_them() -> None:
    world, demos, student = setup(horizon=4)
    oracle = ExpertOracle(world)
    config = GKDConfig(steps=6, batch_size=3, lmbda=0.0, seq_kd=True)
    train_gkd(student, demos, oracle, world.dynamics(), config, torch.Generator().manual_seed(4))
    assert oracle.queries == 6 * 3 * world.horizon


def test_a_table_is_refused_with_a_pointer_to_soft_dagger() -> None:
    world, demos, _ = setup()
    table = TabularPolicy.uniform(world.n_states, world.vocab_size)
    with pytest.raises(ValueError, match="DAgger with soft labels"):
        train_gkd(table, demos, ExpertOracle(world), world.dynamics())


@pytest.mark.slow
def test_gkd_gets_closer_to_the_expert_than_sft_on_the_same_demonstrations() -> None:
    """Paired over 3 seeds: GKD (lmbda 0.5, soft labels on its own samples) ends with a lower
    Monte-Carlo KL(expert || student) along its own samples than SFT with the same steps."""
    from irlhf.metrics.exposure import exposure_bias_mc

    gaps = []
    for seed in range(3):
        world, demos, student = setup(horizon=12, n_demos=32, seed=seed)
        _, _, bc = setup(horizon=12, n_demos=32, seed=seed)
        g = torch.Generator().manual_seed(seed)
        train_gkd(student, demos, ExpertOracle(world), world.dynamics(),
                  GKDConfig(steps=150, batch_size=16, lmbda=0.5, beta=0.0), g)  # fmt: skip
        from irlhf.algorithms.sft import train_sft

        train_sft(bc, demos, world.dynamics(), SFTConfig(steps=150, batch_size=16), g)
        e = torch.Generator().manual_seed(100 + seed)
        r_gkd = exposure_bias_mc(world, student, 256, e).R[-1]
        r_bc = exposure_bias_mc(world, bc, 256, e).R[-1]
        gaps.append(r_bc - r_gkd)
    assert min(gaps) > 0, gaps


def test_seq_kd_and_on_policy_batches_train_in_an_lm_world() -> None:
    """The teacher's samples come from an LM sampled under inference mode: GKD must still take
    gradient steps on them (seq_kd), and on the student's own samples, in the oracle world."""
    from irlhf.worlds.oracle import OracleWorld

    world = OracleWorld(vocab_size=8, n_prompts=2, n_layer=1, n_embd=8, horizon=4, seed=0)
    g = torch.Generator().manual_seed(0)
    demos = Demonstrations.collect(world, 4, g)
    student = CausalLMPolicy.tiny(world.token_vocab_size, world.vocab_size, n_layer=1, n_embd=8,
                                  n_head=2, max_length=world.prompt_length + 4)  # fmt: skip
    before = [p.detach().clone() for p in student.parameters()]
    oracle = ExpertOracle(world)
    config = GKDConfig(steps=6, batch_size=3, lmbda=0.5, seq_kd=True)
    train_gkd(student, demos, oracle, world.dynamics(), config, g)
    assert oracle.queries == 6 * 3 * world.horizon  # every batch fresh: student or teacher
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
