"""The automaton world: structure, presets, validation, and the expert's soft Bellman equations."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from irlhf.policies import TabularPolicy
from irlhf.worlds import PRESETS, AutomatonWorld, Demonstrations, ExpertOracle, make_world
from irlhf.worlds.base import BudgetExceeded

small_worlds = st.builds(
    AutomatonWorld,
    n_states=st.integers(1, 6),
    vocab_size=st.integers(1, 4),
    horizon=st.integers(1, 5),
    trap_fraction=st.floats(0.0, 0.9),
    exit_prob=st.floats(0.0, 1.0),
    reward_spread=st.floats(0.0, 2.0),
    alpha=st.floats(0.05, 2.0),
    gamma=st.floats(0.0, 0.9),
    seed=st.integers(0, 1000),
)


@settings(max_examples=60, deadline=None)
@given(small_worlds)
def test_tensors_are_well_formed(world):
    S, V = world.n_states, world.vocab_size
    assert world.transition.shape == (S, V) and world.transition.dtype == torch.long
    assert bool(((world.transition >= 0) & (world.transition < S)).all())
    assert world.reward_table.shape == (S, V)
    assert world.start.shape == (S,)
    assert abs(float(world.start.sum()) - 1.0) < 1e-12
    assert not bool(world.is_trap[world.start > 0].any()), "episodes start in good states"
    assert world.expert.probs.shape == (S, V)
    assert torch.allclose(world.expert.probs.sum(1), torch.ones(S, dtype=torch.float64))


@settings(max_examples=60, deadline=None)
@given(small_worlds)
def test_expert_satisfies_soft_bellman_equations(world):
    a, g = world.spec.alpha, world.spec.gamma
    V, Q = world.expert_value, world.expert_q
    # Q(s,a) = r(s,a) + gamma V(delta(s,a)) and V(s) = alpha logsumexp(Q(s,.)/alpha)
    assert torch.allclose(Q, world.reward_table + g * V[world.transition], atol=1e-9)
    assert torch.allclose(V, a * torch.logsumexp(Q / a, dim=1), atol=1e-9)
    # pi(a|s) = exp((Q(s,a) - V(s)) / alpha)
    assert torch.allclose(world.expert.probs, torch.exp((Q - V[:, None]) / a), atol=1e-9)


def test_trap_structure_follows_the_knobs():
    world = make_world("absorbing")
    good, trap = ~world.is_trap, world.is_trap
    leads_to_trap = world.is_trap[world.transition]  # (S, V)
    assert (leads_to_trap[good].sum(1) == world.spec.n_trap_tokens).all()
    exits = (~leads_to_trap[trap]).sum(1)
    assert (exits == round(world.spec.exit_prob * world.vocab_size)).all()
    assert (world.reward_table[trap] == -world.spec.trap_cost).all()
    recoverable = make_world("recoverable")
    assert (~recoverable.is_trap[recoverable.transition][recoverable.is_trap]).all()


def test_presets_exist_and_differ_in_recoverability():
    assert {"absorbing", "recoverable"} <= set(PRESETS)
    assert make_world("absorbing").spec.exit_prob < 0.05
    assert make_world("recoverable").spec.exit_prob > 0.95


@pytest.mark.parametrize(
    "knob, value, field",
    [("exit_prob", 1.5, "exit_prob"), ("horizon", -3, "horizon"), ("alpha", 0.0, "alpha")],
)
def test_bad_knobs_name_the_field(knob, value, field):
    with pytest.raises(ValueError, match=field):
        AutomatonWorld(**{knob: value})
    with pytest.raises(ValueError, match="allowed"):
        AutomatonWorld(no_such_knob=1)
    with pytest.raises(ValueError, match="absorbing"):
        make_world("nope")


def test_states_follow_the_transitions_of_a_rollout():
    world = make_world("absorbing", horizon=20)
    seqs = world.rollout(world.expert, 16, torch.Generator().manual_seed(0))
    states = world.states(seqs)
    assert (states[:, 0] == seqs.tokens[:, 0] - world.vocab_size).all()
    for t in range(1, seqs.length - 1):
        assert (states[:, t + 1] == world.transition[states[:, t], seqs.tokens[:, t]]).all()


def test_channels_count_their_budget():
    world = make_world("tiny")
    g = torch.Generator().manual_seed(0)
    demos = Demonstrations.collect(world, 5, g, temperature=2.0, epsilon=0.1)
    assert demos.n == 5 and demos.n_tokens == 5 * world.horizon
    oracle = ExpertOracle(world, budget=5 * world.horizon + 1)
    labels = oracle.label(demos.sequences, soft=False, generator=g)
    assert oracle.queries == labels.n_labels == 5 * world.horizon
    assert labels.actions.shape == demos.sequences.tokens.shape
    with pytest.raises(BudgetExceeded, match="budget"):
        oracle.label(demos.sequences, soft=True)
    soft = ExpertOracle(world).label(demos.sequences, soft=True)
    # a distribution at every charged (completion) position, nothing at the prompt
    expected = demos.sequences.completion_mask.double()
    assert torch.allclose(soft.probs.sum(-1), expected)


def test_the_oracle_returns_no_label_it_did_not_charge_for():
    world = make_world("tiny")
    g = torch.Generator().manual_seed(1)
    seqs = Demonstrations.collect(world, 6, g).sequences
    mask = torch.rand(seqs.tokens.shape, generator=g) < 0.3
    for soft in (True, False):
        oracle = ExpertOracle(world)
        labels = oracle.label(seqs, soft=soft, generator=g, mask=mask)
        charged = mask & seqs.completion_mask
        assert oracle.queries == int(charged.sum()) == labels.n_labels
        if soft:
            assert bool((labels.probs[~charged] == 0).all())
            assert torch.allclose(labels.probs[charged], world.expert_probs(seqs)[charged])
        else:
            assert bool((labels.actions[~charged] == -1).all())
            assert bool((labels.actions[charged] >= 0).all())


def test_act_queries_the_expert_at_the_end_of_each_asked_prefix():
    """The expert's next token after a prefix: drawn from the row of the prefix's last state,
    one query per asked row, -1 for the others."""
    world = make_world("tiny")
    g = torch.Generator().manual_seed(2)
    seqs = Demonstrations.collect(world, 400, g, horizon=3).sequences
    rows = torch.arange(400) % 4 != 0
    oracle = ExpertOracle(world, temperature=0.0)  # greedy: the token is determined
    tokens = oracle.act(seqs, rows, g)
    assert oracle.queries == int(rows.sum())
    assert bool((tokens[~rows] == -1).all())
    state = world.states(seqs)[:, -1]
    last = world.transition[state, seqs.tokens[:, -1]]
    greedy = world.demonstrator(0.0).probs[last]
    assert bool((greedy[rows].gather(1, tokens[rows, None]) > 0).all())


def test_demonstrator_knobs():
    world = make_world("spread")
    greedy = world.demonstrator(temperature=0.0)
    best = world.expert.probs == world.expert.probs.max(dim=1, keepdim=True).values
    assert torch.allclose(greedy.probs, best.double() / best.sum(1, keepdim=True))
    noisy = world.demonstrator(temperature=1.0, epsilon=1.0)
    assert torch.allclose(noisy.probs, torch.full_like(noisy.probs, 1 / world.vocab_size))


def test_oracle_can_stand_for_the_demonstrator():
    world = make_world("spread")
    demos = Demonstrations.collect(world, 4, torch.Generator().manual_seed(0))
    oracle = ExpertOracle(world, temperature=2.0, epsilon=0.2)
    labels = oracle.label(demos.sequences, soft=True)
    expected = world.demonstrator(2.0, 0.2).probs[world.states(demos.sequences)]
    mask = demos.sequences.completion_mask
    assert torch.allclose(labels.probs[mask], expected[mask])
    assert oracle.queries == 4 * world.horizon


def test_state_actions_are_the_pairs_a_tabular_learner_counts():
    """Counting the pairs gives exactly the unsmoothed behaviour-cloning table."""
    from irlhf.algorithms.sft import SFTConfig, train_sft

    world = make_world("tiny")
    demos = Demonstrations.collect(world, 30, torch.Generator().manual_seed(3))
    states, actions = demos.state_actions(world.dynamics())
    assert states.shape == actions.shape == (30 * world.horizon,)
    assert int(actions.max()) < world.vocab_size and int(states.max()) < world.n_states
    counts = torch.zeros(world.n_states, world.vocab_size, dtype=torch.float64)
    counts.index_put_((states, actions), torch.ones(len(states), dtype=torch.float64), True)
    seen = counts.sum(1) > 0
    blank = TabularPolicy.uniform(world.n_states, world.vocab_size)
    bc = train_sft(blank, demos, world.dynamics(), SFTConfig(smoothing=0.0)).policy
    assert torch.allclose(bc.probs[seen], counts[seen] / counts[seen].sum(1, keepdim=True))
