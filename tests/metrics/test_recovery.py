"""The self-recovery probe (He et al. 2021): the expert as its own learner (no excess KL, no KL
half-life), absorbing vs recoverable traps for behaviour cloning, a hand-computed two-step case
in the tiny world, the neural path against the tabular one, and no nan anywhere."""

import math

import numpy as np
import pytest
import torch

from irlhf.algorithms.sft import train_sft
from irlhf.metrics.recovery import SelfRecovery, _summarise, half_life, self_recovery
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies import TabularPolicy
from irlhf.types import Sequences
from irlhf.worlds import Demonstrations, make_world
from irlhf.worlds.oracle import OracleWorld


class TableLM:
    """A tabular policy behind the neural `Policy` interface (tokens in, logits out), so the
    probe's neural path can be checked against its tabular one."""

    def __init__(self, world, table: TabularPolicy) -> None:
        self.world, self.table = world, table
        self.device = torch.device("cpu")

    def next_token_logits(self, seqs: Sequences) -> torch.Tensor:
        return self.table.probs[self.world.states(seqs)].log()

    def sample(self, prompts, max_new_tokens, generator) -> Sequences:
        w = self.world
        state = prompts[:, 0] - w.vocab_size
        for t in range(1, prompts.shape[1]):
            state = w.transition[state, prompts[:, t]]
        actions = torch.empty(len(prompts), max_new_tokens, dtype=torch.long)
        for t in range(max_new_tokens):
            actions[:, t] = self.table.sample(state, generator)
            state = w.transition[state, actions[:, t]]
        return Sequences.from_prompt_and_completion(prompts, actions)


def arrays(result: SelfRecovery) -> list[np.ndarray]:
    return [
        result.excess_kl,
        result.excess_kl_se,
        result.excess_regret,
        result.excess_regret_se,
        result.kl_perturbed,
        result.kl_unperturbed,
        result.reward_perturbed,
        result.reward_unperturbed,
    ]


def assert_no_nan(result: SelfRecovery) -> None:
    for values in arrays(result):
        assert not np.isnan(values).any()
    for h in (result.kl_half_life, result.regret_half_life):
        if h is not None:
            assert not any(math.isnan(x) for x in (h.value, h.ci_low, h.ci_high))


def test_half_life_definition():
    assert half_life(np.array([2.0, 1.5, 0.99, 0.1])) == 3.0
    assert half_life(np.array([2.0, 0.0])) == 2.0
    assert half_life(np.array([2.0, 1.0, 1.0])) == math.inf  # "below half": 1.0 is not
    with pytest.raises(UndefinedMetric, match="nothing to recover from"):
        half_life(np.array([0.0, 0.0]))


@pytest.mark.parametrize("path", ["tabular", "neural"])
def test_the_expert_as_learner_has_no_excess_kl_and_no_kl_half_life(path):
    world = make_world("recoverable", horizon=32)
    learner = world.expert if path == "tabular" else TableLM(world, world.expert)
    result = self_recovery(
        world,
        learner,
        position=4,
        k=1,
        horizon_after=6,
        n_prefixes=300,
        perturbation="unlikely",
        generator=torch.Generator().manual_seed(0),
        n_boot=200,
    )
    assert_no_nan(result)
    np.testing.assert_allclose(result.excess_kl, 0.0, atol=1e-12)
    np.testing.assert_allclose(result.kl_perturbed, 0.0, atol=1e-12)
    assert result.kl_half_life is None
    with pytest.raises(UndefinedMetric, match="nothing to recover from"):
        _ = result.half_life_kl
    with pytest.raises(UndefinedMetric):
        _ = result.half_life_kl_ci
    # the unlikely token is a trap token: the expert itself pays the trap cost (2) at d = 1
    # and, every token leaving a trap here, recovers at once
    assert result.excess_regret[0] > 1.5
    assert result.half_life_regret == 2.0
    np.testing.assert_array_equal(result.distances, np.arange(1, 7))


def test_absorbing_traps_read_as_slow_recovery_and_recoverable_as_fast():
    lives = {}
    for preset in ("absorbing", "recoverable"):
        world = make_world(preset, horizon=32)
        g = torch.Generator().manual_seed(1)
        demos = Demonstrations.collect(world, 50, g)
        blank = TabularPolicy.uniform(world.n_states, world.vocab_size)
        bc = train_sft(blank, demos, world.dynamics()).policy
        result = self_recovery(
            world,
            bc,
            position=8,
            k=1,
            horizon_after=96,
            n_prefixes=2000,
            perturbation="unlikely",
            generator=g,
            n_boot=500,
        )
        assert_no_nan(result)
        assert result.excess_regret[0] > 1.0  # the unlikely token is a trap token
        lives[preset] = (result.half_life_regret, *result.half_life_regret_ci)
    absorbing, recoverable = lives["absorbing"], lives["recoverable"]
    # one exit token in 64: ~ (63/64)^(d-1) of the perturbed arms are still trapped at d, half
    # at d ~ 45; every token exits a recoverable trap: recovered at d = 2
    assert recoverable[0] <= 3 and recoverable[2] <= 4
    assert 20 <= absorbing[0] <= 80
    assert absorbing[1] > recoverable[2]  # the intervals are apart


def test_two_steps_after_a_perturbation_in_the_tiny_world_by_hand():
    """tiny: start state 1; token 0 stays in state 1, token 1 enters the trap 2; in the trap
    token 0 exits to 1 and token 1 stays. The expert's least likely token is 1 in states 1 and
    2, so the perturbed prefix always ends in the trap."""
    world = make_world("tiny")
    assert world.start.tolist() == [0.0, 1.0, 0.0]
    assert world.transition[1:].tolist() == [[1, 2], [1, 2]]
    E = world.expert.probs
    assert E[1].argmin() == 1 and E[2].argmin() == 1
    L = torch.tensor([[0.5, 0.5], [0.7, 0.3], [0.4, 0.6]], dtype=torch.float64)
    r = world.reward_table

    def kl(s):
        return float((E[s] * (E[s] / L[s]).log()).sum())

    def reward(s):  # the learner's expected reward in state s
        return float((L[s] * r[s]).sum())

    # prefix: one expert token from state 1, then position 1 is perturbed (or the expert's)
    p1 = {1: float(E[1, 0]), 2: float(E[1, 1])}  # state after the first expert token
    clean = {1: 0.0, 2: 0.0}  # state after the clean second token
    for s, p in p1.items():
        clean[1] += p * float(E[s, 0])
        clean[2] += p * float(E[s, 1])
    perturbed = {1: 0.0, 2: 1.0}  # token 1 from state 1 or 2 goes to the trap

    def after_learner_step(q):
        return {1: sum(q[s] * float(L[s, 0]) for s in q), 2: sum(q[s] * float(L[s, 1]) for s in q)}

    expected_kl, expected_regret = [], []
    qp, qc = perturbed, clean
    for _ in range(2):
        expected_kl.append(sum(qp[s] * kl(s) for s in qp) - sum(qc[s] * kl(s) for s in qc))
        expected_regret.append(
            sum(qc[s] * reward(s) for s in qc) - sum(qp[s] * reward(s) for s in qp)
        )
        qp, qc = after_learner_step(qp), after_learner_step(qc)

    result = self_recovery(
        world,
        TabularPolicy(L),
        position=1,
        k=1,
        horizon_after=2,
        n_prefixes=20_000,
        perturbation="unlikely",
        generator=torch.Generator().manual_seed(2),
        n_boot=200,
    )
    assert_no_nan(result)
    for d in range(2):
        assert abs(result.excess_kl[d] - expected_kl[d]) < 4 * result.excess_kl_se[d]
        assert abs(result.excess_regret[d] - expected_regret[d]) < 4 * result.excess_regret_se[d]
        assert result.excess_kl_se[d] < 0.05 and result.excess_regret_se[d] < 0.05
    # the perturbed arm is deterministic at d = 1 (the trap): exactly the hand values there
    assert result.kl_perturbed[0] == pytest.approx(kl(2), abs=1e-12)
    assert result.reward_perturbed[0] == pytest.approx(-2.0, abs=1e-12)


def test_the_trace_by_hand_in_the_tiny_world():
    """The perturbed prefix ends in the trap (state 2); the clean one in state 1 or 2 with the
    probabilities of two expert steps from the start. trace[1] = E[KL(L[s_clean] || L[2])];
    the learner's next token then moves both arms to the same state: trace[2] = 0 exactly."""
    world = make_world("tiny")
    E = world.expert.probs
    L = torch.tensor([[0.5, 0.5], [0.7, 0.3], [0.4, 0.6]], dtype=torch.float64)
    q_clean = {s: float(E[1, 0] * E[1, s - 1] + E[1, 1] * E[2, s - 1]) for s in (1, 2)}

    def kl(a, b):
        return float((L[a] * (L[a] / L[b]).log()).sum())

    expected = sum(q * kl(s, 2) for s, q in q_clean.items())
    result = self_recovery(
        world,
        TabularPolicy(L),
        position=1,
        horizon_after=3,
        n_prefixes=20_000,
        perturbation="unlikely",
        generator=torch.Generator().manual_seed(6),
        n_boot=200,
    )
    assert_no_nan(result)
    assert abs(result.trace_kl[0] - expected) < 4 * result.trace_kl_se[0]
    assert result.trace_kl_se[0] < 0.005
    np.testing.assert_array_equal(result.trace_kl[1:], 0.0)
    assert result.half_life_trace == 2.0 and result.half_life_trace_ci == (2.0, 2.0)


def test_the_expert_of_a_language_model_world_has_zero_excess_kl_but_a_trace():
    """In an LM world the perturbation stays in the context: the expert continuing it is still
    the expert (excess KL 0 at every d, no KL half-life), yet what it predicts next changes."""
    world = OracleWorld(
        vocab_size=8, n_prompts=2, n_layer=1, n_embd=8, n_head=2, init_std=1.0, horizon=12
    )
    result = self_recovery(
        world,
        world.demonstrator(),
        position=3,
        horizon_after=6,
        n_prefixes=64,
        perturbation="unlikely",
        generator=torch.Generator().manual_seed(7),
        n_boot=100,
    )
    assert_no_nan(result)
    np.testing.assert_allclose(result.excess_kl, 0.0, atol=1e-5)
    np.testing.assert_allclose(result.kl_perturbed, 0.0, atol=1e-5)
    assert result.kl_half_life is None
    with pytest.raises(UndefinedMetric, match="nothing to recover from"):
        _ = result.half_life_kl
    assert result.trace_kl[0] > 0.01  # the expert's own next token depends on the perturbation
    assert (result.trace_kl >= 0).all() and result.distances.tolist() == list(range(1, 7))


def test_the_neural_path_agrees_with_the_tabular_path():
    world = make_world("tiny", horizon=8)
    L = TabularPolicy(torch.tensor([[0.5, 0.5], [0.7, 0.3], [0.4, 0.6]], dtype=torch.float64))
    kwargs = dict(position=2, k=2, horizon_after=4, n_prefixes=4000, perturbation="random")
    tab = self_recovery(world, L, generator=torch.Generator().manual_seed(3), **kwargs)
    neu = self_recovery(
        world, TableLM(world, L), generator=torch.Generator().manual_seed(4), **kwargs
    )
    for result in (tab, neu):
        assert_no_nan(result)
    for a, b, sa, sb in (
        (tab.excess_kl, neu.excess_kl, tab.excess_kl_se, neu.excess_kl_se),
        (tab.excess_regret, neu.excess_regret, tab.excess_regret_se, neu.excess_regret_se),
    ):
        assert (np.abs(a - b) < 4 * np.sqrt(sa**2 + sb**2) + 1e-12).all()
    # the trace: in the tiny world the next state depends on the token only, so one shared
    # token after the perturbation merges the two arms' states: 0 from d = 2 on, both paths
    for result in (tab, neu):
        assert result.trace_kl[0] > 0
        np.testing.assert_allclose(result.trace_kl[1:], 0.0, atol=1e-12)
        assert result.half_life_trace == 2.0
    diff = abs(tab.trace_kl[0] - neu.trace_kl[0])
    assert diff < 4 * math.hypot(tab.trace_kl_se[0], neu.trace_kl_se[0])


def test_infinite_kl_is_inf_with_a_note_or_a_clear_error_never_nan():
    # only the perturbed arm reaches a state where the learner rules out the expert's token
    kl_p = np.array([[math.inf, 0.5], [0.2, 0.1], [0.3, 0.1]])
    kl_u = np.array([[0.1, 0.1], [0.1, 0.1], [0.1, 0.1]])
    rewards = np.zeros((3, 2))
    rng = np.random.default_rng(0)
    result = _summarise(kl_p, kl_u, rewards - 1, rewards, rng, 50, 0.95, 0, 1, "random")
    assert_no_nan(result)
    assert result.excess_kl[0] == math.inf and result.excess_kl_se[0] == math.inf
    assert result.excess_kl[1] == pytest.approx((0.4 + 0.0 + 0.0) / 3)
    assert result.kl_half_life is None and any("+inf" in n for n in result.notes)
    with pytest.raises(UndefinedMetric, match="undefined"):
        _ = result.half_life_kl
    assert result.half_life_regret == math.inf  # excess regret 1, 1: never halves
    assert any("never falls below half" in n for n in result.notes)
    # both arms infinite at the same distance: inf - inf is a clear error
    with pytest.raises(UndefinedMetric, match="inf - inf"):
        _summarise(kl_p, kl_p, rewards, rewards, rng, 50, 0.95, 0, 1, "random")
    # and through the probe: a learner that rules out the expert's exit token from the trap
    world = make_world("tiny")
    zero = TabularPolicy(torch.tensor([[0.5, 0.5], [0.7, 0.3], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(UndefinedMetric, match="inf - inf"):
        self_recovery(
            world,
            zero,
            position=0,
            horizon_after=3,
            n_prefixes=500,
            perturbation="unlikely",
            generator=torch.Generator().manual_seed(5),
        )


def test_arguments_are_checked():
    world = make_world("tiny")
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="perturbation"):
        self_recovery(world, world.expert, position=0, perturbation="swap", generator=g)
    with pytest.raises(ValueError, match="n_prefixes"):
        self_recovery(world, world.expert, position=0, n_prefixes=1, generator=g)
    with pytest.raises(ValueError, match="k >= 1"):
        self_recovery(world, world.expert, position=0, k=0, generator=g)
