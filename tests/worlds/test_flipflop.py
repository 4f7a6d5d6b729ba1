"""The flip-flop trap world: its tables against a plain-Python statement of the rules, the
expert's behaviour at the absorbing preset, exact DP against Monte Carlo, presets, validation and
the `[world]` table of an imitation run."""

import math

import pytest
import torch
from pydantic import ValidationError

from irlhf.experiments.run import RunContext
from irlhf.kinds.imitation import ImitationConfig, run
from irlhf.metrics.exposure import exact_return, exposure_bias
from irlhf.policies import TabularPolicy
from irlhf.types import Sequences
from irlhf.worlds import (
    AutomatonWorld,
    FlipFlopSpec,
    FlipFlopWorld,
    describe_presets,
    make_world,
)


def rule_step(world: FlipFlopWorld, mode: int, last: tuple[int, ...], token: int):
    """The rules, spelled out: X enters a trap from good mode; in a trap every token goes one
    level deeper (capped at min_stay); from depth min_stay an exit token returns to good mode.
    The context is the last k tokens."""
    s = world.spec
    entry, exit_ = bool(world.is_entry[token]), bool(world.is_exit[token])
    if mode == 0:
        new_mode = 1 if entry else 0
    elif mode < s.min_stay:
        new_mode = mode + 1
    else:
        new_mode = 0 if exit_ else s.min_stay
    return new_mode, (*last, token)[-s.context :]


def index(world: FlipFlopWorld, mode: int, last: tuple[int, ...]) -> int:
    V = world.vocab_size
    ctx = 0
    for t in last:
        ctx = ctx * V + t
    return mode * world.spec.n_contexts + ctx


def unindex(world: FlipFlopWorld, state: int) -> tuple[int, tuple[int, ...]]:
    mode, ctx = divmod(state, world.spec.n_contexts)
    last = []
    for _ in range(world.spec.context):
        ctx, t = divmod(ctx, world.vocab_size)
        last.insert(0, t)
    return mode, tuple(last)


WORLDS = [
    dict(preset="absorbing"),
    dict(preset="recoverable"),
    dict(vocab_size=5, context=2, min_stay=3, exit_prob=0.4, n_trap_tokens=1, seed=3),
    dict(vocab_size=4, min_stay=1, exit_prob=1.0, seed=1),
]


@pytest.mark.parametrize("knobs", WORLDS)
def test_transition_table_implements_the_rules(knobs):
    world = FlipFlopWorld(FlipFlopSpec(**knobs))
    s = world.spec
    V, S = s.vocab_size, s.n_states
    assert world.transition.shape == (S, V) and world.reward_table.shape == (S, V)
    assert int(world.is_entry.sum()) == s.n_trap_tokens
    assert int(world.is_exit.sum()) == round(s.exit_prob * V)
    if not bool(world.is_exit.all()):
        assert not bool((world.is_entry & world.is_exit).any()), "X and E are distinct"
    for state in range(S):
        mode, last = unindex(world, state)
        assert index(world, mode, last) == state
        assert bool(world.is_trap[state]) == (mode > 0)
        for token in range(V):
            assert int(world.transition[state, token]) == index(
                world, *rule_step(world, mode, last, token)
            )
            if mode == 0:
                expected = (
                    -s.exit_penalty if world.is_exit[token] and not world.is_exit.all() else 0
                )
                assert (
                    abs(float(world.reward_table[state, token]) - expected) <= 5 * s.reward_spread
                )
            else:
                assert float(world.reward_table[state, token]) == -s.trap_cost
    # Episodes start uniformly in good mode.
    good = world.mode == 0
    assert torch.allclose(world.start[good], torch.full((s.n_contexts,), 1 / s.n_contexts).double())
    assert float(world.start[~good].sum()) == 0.0


def test_exits_only_from_min_stay_and_every_token_exits_when_exit_prob_is_one():
    for knobs in (dict(preset="absorbing"), dict(preset="recoverable", min_stay=3)):
        world = FlipFlopWorld(FlipFlopSpec(**knobs))
        m, C = world.spec.min_stay, world.spec.n_contexts
        next_mode = world.mode[world.transition]  # [S, V]
        for depth in range(1, m):  # no exit before min_stay, whatever the token
            assert bool((next_mode[world.mode == depth] == depth + 1).all())
        exits = next_mode[world.mode == m] == 0
        assert bool((exits == world.is_exit.unsqueeze(0).expand(C, -1)).all())
        entries = next_mode[world.mode == 0] == 1
        assert bool((entries == world.is_entry.unsqueeze(0).expand(C, -1)).all())
    recoverable = make_world("flipflop-recoverable", min_stay=3)
    assert bool(recoverable.is_exit.all())
    assert bool((recoverable.mode[recoverable.transition[recoverable.mode == 3]] == 0).all())


@pytest.mark.parametrize("knobs", WORLDS[:3])
def test_states_of_a_token_sequence_follow_the_rules(knobs):
    world = FlipFlopWorld(FlipFlopSpec(**knobs))
    gen = torch.Generator().manual_seed(0)
    V, k, C = world.vocab_size, world.spec.context, world.spec.n_contexts
    # Random tokens with many X, so that traps and exits are visited.
    weights = torch.ones(V) + 6.0 * world.is_entry + 3.0 * world.is_exit
    actions = torch.multinomial(weights.expand(64, -1), 40, replacement=True, generator=gen)
    prompts = world.sample_prompts(64, gen)
    seqs = Sequences.from_prompt_and_completion(prompts, actions)
    states = world.states(seqs)
    visited_modes = set()
    for b in range(64):
        start = int(prompts[b, 0]) - V
        assert 0 <= start < C, "prompts name good states"
        mode, last = unindex(world, start)
        assert int(states[b, 0]) == start and mode == 0
        for t in range(40):
            assert int(states[b, t + 1]) == index(world, mode, last), (b, t)
            visited_modes.add(mode)
            mode, last = rule_step(world, mode, last, int(actions[b, t]))
    assert visited_modes == set(range(world.spec.min_stay + 1))
    assert len(last) == k


def test_the_expert_avoids_traps_and_leaves_them_at_once():
    world = make_world("flipflop-absorbing")
    probs = world.expert.probs
    entry = probs[world.mode == 0][:, world.is_entry].sum(1)
    assert float(entry.max()) < 1e-3  # per good step (measured ~1e-7)
    stay = world.spec.min_stay
    exit_ = probs[world.mode == stay][:, world.is_exit].sum(1)
    assert float(exit_.min()) > 0.9  # measured 0.998
    # In good mode it rarely emits the (penalised) exit token.
    assert float(probs[world.mode == 0][:, world.is_exit].sum(1).max()) < 0.05


def test_exact_dp_equals_monte_carlo():
    world = make_world("flipflop-absorbing", horizon=32)
    policy = world.demonstrator(epsilon=0.1)  # enters traps: ~0.0125 per good step
    gen = torch.Generator().manual_seed(1)
    seqs = world.rollout(policy, 20_000, gen)
    returns = world.true_return(seqs)
    mean, se = float(returns.mean()), float(returns.std()) / math.sqrt(len(returns))
    exact = exact_return(world, policy)
    assert float(world.is_trap[world.states(seqs)].double().mean()) > 0.01, "traps are visited"
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
    exposure = exposure_bias(world, policy)
    regret = exact_return(world, world.expert) - exact
    assert exposure.regret[-1] == pytest.approx(regret, rel=1e-9, abs=1e-9)
    expert_mc = world.true_return(world.rollout(world.expert, 20_000, gen))
    gap = float(expert_mc.mean()) - mean
    gap_se = math.hypot(float(expert_mc.std()) / math.sqrt(20_000), se)
    assert abs(gap - regret) < 4 * gap_se


def test_presets_and_validation():
    for name, exit_all in (("absorbing", False), ("recoverable", True), ("spread", False)):
        world = make_world(f"flipflop-{name}")
        assert isinstance(world, FlipFlopWorld) and isinstance(world, AutomatonWorld)
        assert bool(world.is_exit.all()) == exit_all
    absorbing = make_world("flipflop-absorbing").spec
    assert (absorbing.vocab_size, absorbing.n_trap_tokens, absorbing.n_exit_tokens) == (16, 2, 1)
    assert (absorbing.min_stay, absorbing.reward_spread, absorbing.exit_penalty) == (2, 0.1, 1.0)
    assert (absorbing.trap_cost, absorbing.alpha, absorbing.gamma) == (2.0, 0.3, 0.95)
    assert absorbing.horizon == 128 and absorbing.n_states == 48
    assert make_world("flipflop-spread").spec.reward_spread > absorbing.reward_spread
    assert make_world("flipflop-absorbing", horizon=64).horizon == 64
    assert make_world("flipflop-absorbing", context=2).n_states == 3 * 256
    assert isinstance(make_world("absorbing"), AutomatonWorld)  # the automaton presets remain
    with pytest.raises(ValueError, match="flipflop-absorbing"):
        make_world("flipflop-nope")
    with pytest.raises(ValidationError, match="min_stay"):
        FlipFlopSpec(min_stay=0)
    with pytest.raises(ValidationError, match="context"):
        FlipFlopSpec(context=3)
    with pytest.raises(ValidationError, match="n_trap_tokens"):
        FlipFlopSpec(vocab_size=4, n_trap_tokens=3, exit_prob=0.5)
    with pytest.raises(ValueError, match="unknown flip-flop knob"):
        FlipFlopSpec().replace(n_states=3)
    with pytest.raises(ValidationError, match="unknown flip-flop preset"):
        FlipFlopSpec(preset="tiny")
    rows = describe_presets().columns[0]._cells
    assert {"flipflop-absorbing", "flipflop-recoverable", "flipflop-spread", "absorbing"} <= set(
        rows
    )


@pytest.mark.parametrize("algorithm", ["sft", "dagger"])
def test_a_tabular_imitation_run_in_the_flipflop_world(tmp_path, algorithm):
    config = ImitationConfig(
        world={"kind": "flipflop", "preset": "absorbing", "horizon": 16},
        algorithm=algorithm,
        demonstrations={"n": 20},
    )
    records = run(config, RunContext(tmp_path, config))
    by = {(r["metric"], r.get("L")): r["value"] for r in records}
    world = make_world("flipflop-absorbing", horizon=16)
    assert by[("j_expert", None)] == pytest.approx(exact_return(world, world.expert))
    assert by[("j_expert", None)] - by[("j_model", None)] == pytest.approx(by[("regret", 16)])
    assert by[("regret", 16)] > 0


def test_a_uniform_table_is_a_valid_policy_in_the_world():
    world = make_world("flipflop-recoverable", horizon=8)
    uniform = TabularPolicy.uniform(world.n_states, world.vocab_size)
    assert exact_return(world, uniform) < exact_return(world, world.expert)
