"""Bradley-Terry reward models: the tabular fit's optimality, ranking recovery, ensembles."""

import copy
import math

import pytest
import torch

from irlhf.algorithms.reward_model import (
    NeuralRewardModel,
    RewardModelConfig,
    TabularRewardModel,
    concat_comparisons,
    make_reward_model,
    sequence_log_probs,
    state_action_counts,
)
from irlhf.metrics.reward import comparison_accuracy, reward_correlation
from irlhf.policies import TabularPolicy
from irlhf.types import Comparisons, Sequences
from irlhf.worlds import make_world
from irlhf.worlds.annotator import Annotator, sample_pairs


def comparisons_of(world, policy, n, seed, beta=1e6):
    g = torch.Generator().manual_seed(seed)
    a, b = sample_pairs(world.dynamics(), policy, n, g)
    return Annotator(world, beta=beta).compare(a, b, g), g


def test_counts_and_log_probs_sum_along_the_latent_states():
    world = make_world("spread", horizon=5)
    g = torch.Generator().manual_seed(0)
    seqs = world.rollout(world.expert, 7, g)
    counts = state_action_counts(world.dynamics(), seqs)  # (7, S * V)
    assert torch.equal(counts.sum(dim=1), torch.full((7,), 5.0, dtype=torch.float64))
    # Sum of the true reward table along the counts = the true return.
    assert torch.allclose(counts @ world.reward_table.flatten(), world.true_return(seqs))
    states = world.states(seqs)
    by_hand = sum(world.expert.probs[states[:, t], seqs.tokens[:, t]].log() for t in range(1, 6))
    assert torch.allclose(sequence_log_probs(world.expert, seqs, world.dynamics()), by_hand)


def test_tabular_fit_of_one_comparison_solves_the_stationarity_equation():
    """One comparison with count difference d and penalty l2: the optimum is w = c d with
    l2 c = sigmoid(-c |d|^2) (gradient of -log sigmoid(w.d) + l2/2 |w|^2 set to zero)."""
    world = make_world("spread", horizon=4)
    seqs = world.rollout(world.expert, 2, torch.Generator().manual_seed(1))
    l2 = 0.5
    model = TabularRewardModel(world.dynamics(), RewardModelConfig(l2=l2))
    model.fit(Comparisons(seqs[:1], seqs[1:]), torch.Generator())
    d = (
        state_action_counts(world.dynamics(), seqs[:1])
        - state_action_counts(world.dynamics(), seqs[1:])
    )[0]
    w = model.table.flatten()
    c = float(w @ d / (d @ d))
    assert torch.allclose(w, c * d, atol=1e-8)
    assert l2 * c == pytest.approx(1 / (1 + math.exp(c * float(d @ d))), abs=1e-8)


def test_reward_model_recovers_the_ranking_of_true_returns():
    """2,000 noiseless comparisons: Spearman > 0.9 with the true return on held-out sequences
    from the same policy and accuracy > 0.9 on held-out comparisons."""
    world = make_world("spread")
    policy = world.demonstrator(10.0)
    comparisons, g = comparisons_of(world, policy, 2000, seed=2)
    model = TabularRewardModel(world.dynamics())
    metrics = model.fit(comparisons, g)
    assert metrics["rm/comparisons"] == 2000 and metrics["rm/train_accuracy"] > 0.95
    held_out = world.rollout(policy, 1000, g)
    assert reward_correlation(model, world, held_out)["spearman"] > 0.9
    fresh, _ = comparisons_of(world, policy, 500, seed=3)
    assert comparison_accuracy(model, fresh) > 0.9


def test_more_comparisons_make_a_better_reward_model():
    world = make_world("spread")
    policy = world.demonstrator(10.0)
    held_out = world.rollout(policy, 1000, torch.Generator().manual_seed(4))
    spearman = []
    for n in (30, 300, 3000):
        comparisons, g = comparisons_of(world, policy, n, seed=5)
        model = TabularRewardModel(world.dynamics())
        model.fit(comparisons, g)
        spearman.append(reward_correlation(model, world, held_out)["spearman"])
    assert spearman[0] < spearman[1] < spearman[2], spearman


def test_ensemble_members_differ_and_the_score_is_their_mean():
    world = make_world("spread", horizon=8)
    comparisons, g = comparisons_of(world, world.demonstrator(5.0), 200, seed=6, beta=1.0)
    model = make_reward_model(world.dynamics(), RewardModelConfig(ensemble_size=4))
    model.fit(comparisons, g)
    seqs = world.rollout(world.expert, 50, g)
    members = model.score_members(seqs)  # (4, 50)
    assert members.shape == (4, 50)
    assert torch.allclose(model.score(seqs), members.mean(dim=0))
    assert torch.allclose(
        model.score(seqs), state_action_counts(world.dynamics(), seqs) @ model.table.flatten()
    )
    assert bool((model.score_std(seqs) > 0).all())
    single = TabularRewardModel(world.dynamics())
    single.fit(comparisons, g)
    assert bool((single.score_std(seqs) == 0).all())


def test_refit_on_all_comparisons_matches_one_fit():
    """The tabular fit is convex and starts from zero: refitting is history-free."""
    world = make_world("spread", horizon=8)
    first, g = comparisons_of(world, world.expert, 50, seed=7, beta=1.0)
    second, _ = comparisons_of(world, world.demonstrator(3.0), 50, seed=8, beta=1.0)
    both = concat_comparisons([first, second])
    incremental = TabularRewardModel(world.dynamics())
    incremental.fit(first, g)
    incremental.fit(both, g)
    fresh = TabularRewardModel(world.dynamics())
    fresh.fit(both, g)
    assert torch.allclose(incremental.table, fresh.table, atol=1e-6)


def test_no_comparisons_is_an_error():
    world = make_world("tiny")
    empty = Sequences.from_prompt_and_completion(
        torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long)
    )
    with pytest.raises(ValueError, match="at least one comparison"):
        TabularRewardModel(world.dynamics()).fit(Comparisons(empty, empty), torch.Generator())


@pytest.mark.slow
def test_neural_reward_model_scores_and_learns():
    """A tiny GPT-2 with a scalar head: shapes, ensemble spread, and a training loss that falls
    below the chance level log 2 on comparisons whose first token decides the return."""
    world = make_world("spread", horizon=4)
    dynamics = world.dynamics()
    config = RewardModelConfig(
        kind="neural", ensemble_size=2, steps=60, batch_size=32, lr=3e-3, n_layer=1, n_embd=32
    )
    model = NeuralRewardModel(dynamics, config)
    g = torch.Generator().manual_seed(9)
    comparisons, _ = comparisons_of(world, TabularPolicy.uniform(32, 16), 300, seed=9)
    metrics = model.fit(comparisons, g)
    assert metrics["rm/train_loss"] < math.log(2)
    seqs = comparisons.chosen[:10]
    assert model.score_members(seqs).shape == (2, 10)
    assert bool((model.score_std(seqs) > 0).all())


@pytest.mark.parametrize("pooling", ["last", "sum"])
def test_neural_reward_model_lean_forward_equals_the_hugging_face_backbone(pooling, monkeypatch):
    """The GPT-2 fast path (hidden states only where the pooling reads them) gives the scores
    and gradients of the Hugging Face backbone's forward, with right-padded rows."""
    from irlhf.algorithms.reward_model import _ScalarHeadModel
    from irlhf.policies import causal_lm, lean_gpt2

    backbone = causal_lm.CausalLMPolicy.tiny(20, n_layer=2, n_embd=32, seed=1).model.base_model
    torch.manual_seed(0)
    ours = _ScalarHeadModel(backbone, 32, pooling)
    theirs = copy.deepcopy(ours)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 20, (6, 11), generator=g)
    tokens[3:, :3] = tokens[:3, :3]  # pairs sharing a prompt: computed once on the fast path
    seqs = Sequences.from_prompt_and_completion(tokens[:, :3], tokens[:, 3:])
    completion = seqs.completion_mask.clone()
    completion[1, -3:] = False  # right padding: the last completion tokens differ per row
    completion[4, -5:] = False
    seqs = Sequences(seqs.tokens, seqs.prompt_mask, completion)
    assert lean_gpt2.LeanGPT2.of(backbone, seqs.prompt_mask | completion) is not None
    scores = ours(seqs)
    monkeypatch.setattr(lean_gpt2.LeanGPT2, "of", staticmethod(lambda *args: None))
    expected = theirs(seqs)  # the Hugging Face backbone's forward
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    scores.square().sum().backward()
    expected.square().sum().backward()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_a_neural_reward_model_fits_prompts_longer_than_one_token():
    """The backbone's context is prompt_length + horizon (the text world's prompts are 16
    tokens), not horizon + 1; scoring a full-length sequence works and depends on every token."""
    from types import SimpleNamespace

    P, H, V = 8, 6, 20
    dynamics = SimpleNamespace(token_vocab_size=V, vocab_size=V, horizon=H, prompt_length=P)
    config = RewardModelConfig(kind="neural", n_layer=1, n_embd=16, n_head=2)
    model = NeuralRewardModel(dynamics, config)
    assert model.members[0].backbone.config.n_positions == P + H
    tokens = torch.randint(V, (3, P + H), generator=torch.Generator().manual_seed(0))
    seqs = Sequences.from_prompt_and_completion(tokens[:, :P], tokens[:, P:])
    first = (tokens[:, :1] + 1) % V  # another first prompt token
    changed = Sequences.from_prompt_and_completion(
        torch.cat([first, tokens[:, 1:P]], 1), tokens[:, P:]
    )
    with torch.no_grad():
        score, first_changed = model.score(seqs), model.score(changed)
    assert score.shape == (3,) and bool(torch.isfinite(score).all())
    assert not torch.allclose(score, first_changed)  # the first prompt token is in context


def test_a_saved_neural_reward_model_loads_with_the_same_scores(tmp_path):
    """save -> load keeps every member's backbone and head (safetensors + JSON, no pickle)."""
    from irlhf.algorithms.reward_model import REWARD_MODEL_FILE
    from irlhf.policies.causal_lm import CausalLMPolicy

    config = RewardModelConfig(kind="neural", ensemble_size=2, n_layer=1, n_embd=16, n_head=2)
    backbones = [CausalLMPolicy.tiny(10, n_layer=1, n_embd=16, n_head=2, seed=s) for s in (1, 2)]
    model = NeuralRewardModel(None, config, backbones)
    model.save(tmp_path / "rm")
    assert not list((tmp_path / "rm").glob("*.bin"))
    loaded = NeuralRewardModel.load(tmp_path / "rm")
    assert loaded.config == config
    tokens = torch.randint(10, (4, 7), generator=torch.Generator().manual_seed(0))
    seqs = Sequences.from_prompt_and_completion(tokens[:, :3], tokens[:, 3:])
    assert torch.equal(loaded.score_members(seqs), model.score_members(seqs))
    (tmp_path / "rm" / REWARD_MODEL_FILE).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="could not be loaded: format 'something else'"):
        NeuralRewardModel.load(tmp_path / "rm")
