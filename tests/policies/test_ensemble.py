"""Member m of an `EnsemblePolicy` is the run alone (issue 16's done-when).

Each test builds the members from single `CausalLMPolicy.tiny` runs (seeds 3, 7, 11) and
compares member m with its single run: the forward, the loss and gradients of the first SFT step
(float64, 1e-6 as the issue asks; they agree to ~1e-12), the logits after 50 SFT steps of
`fit_neural` (float32), and sampled tokens (exactly equal) and their log-probs.
"""

from __future__ import annotations

import copy

import pytest
import torch

from irlhf.algorithms.sft import SFTConfig, fit_neural, label_loss
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.policies.ensemble import (
    EnsembleGPT2,
    EnsemblePolicy,
    clip_member_grad_norms,
    member_major,
    member_mean_weights,
)
from irlhf.policies.sampling import Decoding, draw
from irlhf.types import ExpertLabels, Sequences

VOCAB, ACTIONS, SEEDS = 14, 11, (3, 7, 11)
PROMPT, COMPLETION = 3, 7


def single(seed: int, dtype: torch.dtype = torch.float32) -> CausalLMPolicy:
    p = CausalLMPolicy.tiny(
        VOCAB, ACTIONS, n_layer=2, n_embd=16, n_head=2, max_length=32, seed=seed
    )
    p.model.to(dtype)
    return p


def labels(n: int, seed: int) -> ExpertLabels:
    """n demonstrations with right-padded completions of random lengths 1..COMPLETION."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, ACTIONS, (n, PROMPT + COMPLETION), generator=g)
    seqs = Sequences.from_prompt_and_completion(tokens[:, :PROMPT], tokens[:, PROMPT:])
    lengths = torch.randint(1, COMPLETION + 1, (n, 1), generator=g)
    keep = torch.arange(PROMPT + COMPLETION) < PROMPT + lengths
    seqs = Sequences(seqs.tokens, seqs.prompt_mask, seqs.completion_mask & keep)
    return ExpertLabels(seqs, seqs.completion_mask, actions=seqs.tokens)


def test_members_have_the_single_runs_weights_and_forward() -> None:
    runs = [single(s, torch.float64) for s in SEEDS]
    ensemble = EnsemblePolicy.of(runs)
    assert ensemble.model.tied  # GPT-2 ties its output layer to the token embedding
    data = [labels(5, 100 + m) for m in range(len(SEEDS))]
    logits, hidden = ensemble.action_logits(
        member_major(data).sequences, start=2, end=9, hidden=True
    )
    assert logits.shape == (15, 7, ACTIONS) and hidden is not None
    for m, run in enumerate(runs):
        alone, states = run.action_logits(data[m].sequences, start=2, end=9, hidden=True)
        torch.testing.assert_close(logits[5 * m : 5 * m + 5], alone, rtol=0, atol=1e-12)
        torch.testing.assert_close(hidden[5 * m : 5 * m + 5], states, rtol=0, atol=1e-12)
        member = ensemble.member(m).model.state_dict()
        for name, value in run.model.state_dict().items():
            torch.testing.assert_close(member[name], value, rtol=0, atol=0)
    tiny = EnsemblePolicy.tiny(SEEDS, VOCAB, action_vocab_size=ACTIONS, n_layer=2, n_embd=16)
    torch.testing.assert_close(
        tiny.model.param("transformer.h.1.mlp.c_fc.weight")[1],
        CausalLMPolicy.tiny(VOCAB, ACTIONS, n_layer=2, n_embd=16, seed=7)
        .model.transformer.h[1]
        .mlp.c_fc.weight,
    )


def test_untied_output_layer_is_stacked_per_member() -> None:
    runs = [single(s, torch.float64) for s in SEEDS[:2]]
    for run in runs:  # an untied copy of each: its own output layer, perturbed
        run.model.config.tie_word_embeddings = False
        run.model.lm_head.weight = torch.nn.Parameter(run.model.lm_head.weight.detach() * 1.5)
    ensemble = EnsemblePolicy.of(runs)
    assert not ensemble.model.tied
    data = [labels(4, 200 + m) for m in range(2)]
    logits = ensemble.action_logits(member_major(data).sequences)[0]
    for m, run in enumerate(runs):
        torch.testing.assert_close(
            logits[4 * m : 4 * m + 4], run.action_logits(data[m].sequences)[0], rtol=0, atol=1e-12
        )


def soft(hard: ExpertLabels, seed: int) -> ExpertLabels:
    """The same prefixes with random expert distributions as labels (GKD's soft labels)."""
    shape = (*hard.mask.shape, ACTIONS)
    probs = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ExpertLabels(hard.sequences, hard.mask, probs=probs / probs.sum(-1, keepdim=True))


@pytest.mark.parametrize("jsd_beta", [None, 0.0, 0.5])  # None: hard labels (NLL)
def test_first_sft_step_loss_and_gradients_equal_the_single_runs(jsd_beta: float | None) -> None:
    runs = [single(s, torch.float64) for s in SEEDS]
    ensemble = EnsemblePolicy.of(runs)
    data = [labels(6, 300 + m) for m in range(len(SEEDS))]  # members' token counts differ
    if jsd_beta is not None:
        data = [soft(d, 700 + m) for m, d in enumerate(data)]
    merged = member_major(data)
    beta = 0.0 if jsd_beta is None else jsd_beta
    loss, _ = label_loss(ensemble, merged, jsd_beta=beta)
    loss.backward()
    clip_member_grad_norms(list(ensemble.parameters()), 1.0, len(SEEDS))
    alone = []
    for m, run in enumerate(runs):
        loss_m, _ = label_loss(run, data[m], jsd_beta=beta)
        loss_m.backward()
        torch.nn.utils.clip_grad_norm_(list(run.parameters()), 1.0)
        alone.append(loss_m)
        for name, p in run.model.named_parameters():
            grad = ensemble.model.param(name).grad
            assert grad is not None and p.grad is not None
            torch.testing.assert_close(grad[m], p.grad, rtol=0, atol=1e-6)
            assert (grad[m] - p.grad).abs().max() < 1e-12
    # the ensemble's loss is the sum over members of each member's mean
    assert loss.item() == pytest.approx(sum(a.item() for a in alone), abs=1e-12)


def test_fifty_sft_steps_train_each_member_as_alone() -> None:
    """fit_neural on the ensemble (two label batches, as DAgger's aggregated rounds) against
    fit_neural on each single run with the same data and generator seed."""
    config = SFTConfig(steps=50, batch_size=4, lr=3e-3, weight_decay=0.01)
    data = [[labels(7, 400 + m), labels(5, 500 + m)] for m in range(len(SEEDS))]
    runs = [single(s) for s in SEEDS]
    ensemble = EnsemblePolicy.of(runs)
    merged = [member_major([d[i] for d in data]) for i in range(2)]
    records = fit_neural(
        ensemble, merged, config, [torch.Generator().manual_seed(s) for s in SEEDS]
    )
    probe = labels(6, 600).sequences
    alone = []
    for m, (seed, run) in enumerate(zip(SEEDS, runs, strict=True)):
        alone.append(fit_neural(run, data[m], config, torch.Generator().manual_seed(seed)))
        member_logits = ensemble.member(m).action_logits(probe)[0]
        # measured: within 1e-5 of logits of size ~2
        torch.testing.assert_close(member_logits, run.action_logits(probe)[0], rtol=1e-4, atol=1e-4)
        # and not trivially: training moved the member away from its start
        start = single(seed).action_logits(probe)[0]
        assert (member_logits - start).abs().max() > 0.1
    # the ensemble's records are the members' means (token counts: their sum)
    assert len(records) == 50
    for step, record in enumerate(records):
        singles = [run_records[step] for run_records in alone]
        mean = sum(r["loss/nll"] for r in singles) / len(SEEDS)
        assert record["loss/nll"] == pytest.approx(mean, rel=1e-4)
        assert record["nll/tokens"] == sum(r["nll/tokens"] for r in singles)


@pytest.mark.parametrize(
    "decoding", [{}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.8}, {"greedy": True}]
)
def test_sampling_with_a_members_generator_gives_its_runs_tokens(decoding: dict) -> None:
    runs = [single(s) for s in SEEDS]
    ensemble = EnsemblePolicy.of(runs)
    prompts = [
        torch.randint(0, VOCAB, (5, PROMPT), generator=torch.Generator().manual_seed(m))
        for m in range(len(SEEDS))
    ]
    seqs, log_probs = ensemble.sample_with_log_probs(
        torch.cat(prompts), 12, [torch.Generator().manual_seed(s) for s in SEEDS], **decoding
    )
    for m, (seed, run) in enumerate(zip(SEEDS, runs, strict=True)):
        alone, alone_log_probs = run.sample_with_log_probs(
            prompts[m], 12, torch.Generator().manual_seed(seed), **decoding
        )
        assert torch.equal(seqs.tokens[5 * m : 5 * m + 5], alone.tokens)
        torch.testing.assert_close(log_probs[5 * m : 5 * m + 5], alone_log_probs)
    if not decoding:  # at temperature 1 the draw's log-probs are the policy's own
        torch.testing.assert_close(ensemble.log_probs(seqs), log_probs, rtol=1e-5, atol=1e-5)


def test_member_mean_weights_sum_the_members_means() -> None:
    mask = torch.tensor([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=torch.bool)  # members of 2 rows
    weights = member_mean_weights(mask, 2)
    expected = torch.tensor([[1 / 3, 1 / 3], [1 / 3, 0], [0, 1], [0, 0]], dtype=torch.float64)
    torch.testing.assert_close(weights, expected)
    x = torch.tensor([[1.0, 2.0], [3.0, 9.0], [5.0, 7.0], [8.0, 8.0]], dtype=torch.float64)
    # 2 * masked mean = mean(1, 2, 3) + mean(7)
    assert 2 * (x * weights).sum() / weights.sum() == pytest.approx(2.0 + 7.0)


def test_member_gradient_clipping_uses_each_members_norm() -> None:
    stacked = [torch.zeros(2, 3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    stacked[0].grad = torch.tensor([[3.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    stacked[1].grad = torch.tensor([4.0, 0.2])
    norms = clip_member_grad_norms(stacked, 1.0, 2)
    torch.testing.assert_close(norms, torch.tensor([5.0, (0.01 + 0.04) ** 0.5]))
    scale = 1.0 / (5.0 + 1e-6)
    torch.testing.assert_close(stacked[0].grad, torch.tensor([[3 * scale, 0, 0], [0.1, 0, 0]]))
    torch.testing.assert_close(stacked[1].grad, torch.tensor([4 * scale, 0.2]))  # under 1: kept


def test_draw_with_one_generator_per_group_equals_separate_draws() -> None:
    logits = torch.randn(6, 9, generator=torch.Generator().manual_seed(0))
    tokens, log_probs = draw(
        logits, [torch.Generator().manual_seed(s) for s in (1, 2, 3)], Decoding()
    )
    for g, seed in enumerate((1, 2, 3)):
        alone = draw(logits[2 * g : 2 * g + 2], torch.Generator().manual_seed(seed), Decoding())
        assert torch.equal(tokens[2 * g : 2 * g + 2], alone[0])
        assert torch.equal(log_probs[2 * g : 2 * g + 2], alone[1])
    with pytest.raises(ValueError, match="equal groups"):
        draw(logits, [torch.Generator()] * 4, Decoding())


def test_rejects_what_the_lean_path_does_not_cover() -> None:
    ensemble = EnsemblePolicy.of([single(s) for s in SEEDS[:2]])
    seqs = labels(4, 0).sequences
    prompt_mask = seqs.prompt_mask.clone()
    prompt_mask[0, 0] = False  # row 0 starts with padding
    left_padded = Sequences(seqs.tokens, prompt_mask, seqs.completion_mask)
    with pytest.raises(ValueError, match="right-padded"):
        ensemble.action_logits(left_padded)
    with pytest.raises(ValueError, match="members' batches"):
        ensemble.action_logits(labels(3, 0).sequences)
    llama = CausalLMPolicy.tiny(VOCAB, ACTIONS, n_layer=1, n_embd=16, arch="llama")
    with pytest.raises(ValueError, match="not a GPT-2"):
        EnsembleGPT2([llama.model])  # type: ignore[list-item]
    two = [copy.deepcopy(single(0).model), single(1, torch.float64).model]
    two[1].config.n_embd = 32
    with pytest.raises(ValueError, match="differ in config"):
        EnsembleGPT2(two)
