"""The fast paths of CausalLMPolicy (issue 7) compute what the Hugging Face model computes.

`LeanGPT2` is GPT-2's forward written out over the model's own parameters: its logits and
gradients must equal the Hugging Face forward's, it must step aside whenever it would not
(left padding, active dropout, other architectures), and the sampler's inverse-CDF draw must
never pick a token the filters removed.
"""

from __future__ import annotations

import copy

import pytest
import torch

from irlhf.policies import lean_gpt2, sampling
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.policies.lean_gpt2 import LeanGPT2
from irlhf.policies.sampling import Decoding
from irlhf.types import Sequences

VOCAB, ACTIONS = 40, 32


def policy(seed: int = 0, **kwargs) -> CausalLMPolicy:
    return CausalLMPolicy.tiny(VOCAB, ACTIONS, n_layer=2, n_embd=32, n_head=4, seed=seed, **kwargs)


def batch(b: int = 5, prompt: int = 4, completion: int = 9, seed: int = 0) -> Sequences:
    tokens = torch.randint(
        0, ACTIONS, (b, prompt + completion), generator=torch.Generator().manual_seed(seed)
    )
    return Sequences.from_prompt_and_completion(tokens[:, :prompt], tokens[:, prompt:])


def hf_logits(p: CausalLMPolicy, seqs: Sequences) -> torch.Tensor:
    mask = (seqs.prompt_mask | seqs.completion_mask).long()
    return p.model(input_ids=seqs.tokens, attention_mask=mask).logits[..., :ACTIONS]


def test_lean_logits_and_gradients_equal_the_hugging_face_forward() -> None:
    ours, theirs, seqs = policy(), policy(), batch()
    assert LeanGPT2.of(ours.model, seqs.prompt_mask | seqs.completion_mask) is not None
    logits, _ = ours.action_logits(seqs)
    expected = hf_logits(theirs, seqs)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    (logits * weights).sum().backward()
    (expected * weights).sum().backward()
    for (name, a), b in zip(ours.model.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_action_logits_slices_positions_and_returns_hidden_states() -> None:
    p, seqs = policy(), batch()
    full, _ = p.action_logits(seqs)
    part, hidden = p.action_logits(seqs, start=3, end=10, hidden=True)
    torch.testing.assert_close(part, full[:, 3:10], atol=1e-6, rtol=0)
    assert part.is_contiguous() and hidden.shape == (5, 7, 32)
    out = p.model(input_ids=seqs.tokens, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(hidden, out[:, 3:10], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="start < end"):
        p.action_logits(seqs, start=5, end=5)


def test_right_padding_takes_the_lean_path_and_left_padding_falls_back() -> None:
    p, seqs = policy(), batch()
    right = seqs.completion_mask.clone()
    right[0, -3:] = False
    right_padded = Sequences(seqs.tokens, seqs.prompt_mask, right)
    attention = right_padded.prompt_mask | right_padded.completion_mask
    assert LeanGPT2.of(p.model, attention) is not None
    left = seqs.prompt_mask.clone()
    left[1, 0] = False  # a left-padded prompt
    left_padded = Sequences(seqs.tokens, left, seqs.completion_mask)
    assert LeanGPT2.of(p.model, left_padded.prompt_mask | left_padded.completion_mask) is None
    # the fallback is the Hugging Face forward with the attention mask
    torch.testing.assert_close(
        p.action_logits(left_padded)[0], hf_logits(p, left_padded), atol=0, rtol=0
    )
    # real tokens are unaffected by right padding
    torch.testing.assert_close(
        p.log_probs(right_padded)[0, :-3], p.log_probs(seqs)[0, :-3], atol=1e-6, rtol=0
    )


def test_dropout_in_training_and_other_architectures_take_the_hugging_face_path() -> None:
    p = policy()
    p.model.config.resid_pdrop = 0.1
    assert LeanGPT2.of(p.model.train()) is None
    assert LeanGPT2.of(p.model.eval()) is not None  # dropout is off in eval mode
    llama = CausalLMPolicy.tiny(VOCAB, ACTIONS, n_layer=1, n_embd=32, n_head=4, arch="llama")
    assert LeanGPT2.of(llama.model) is None


def test_lean_sampler_equals_the_hugging_face_cached_sampler() -> None:
    p = policy(seed=2)
    prompts = batch(6, 3, 1).tokens[:, :3]
    lean = p.sample_with_log_probs(prompts, 12, torch.Generator().manual_seed(5))
    with torch.inference_mode():
        tokens, log_probs = p._sample_hf(prompts, 12, torch.Generator().manual_seed(5), Decoding())
    assert torch.equal(lean[0].tokens[:, 3:], tokens)
    torch.testing.assert_close(lean[1][:, 3:], log_probs, atol=1e-5, rtol=0)


def test_draw_never_picks_a_filtered_token_even_when_u_rounds_up(monkeypatch) -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, -50.0, 3.0, 0.5]] * 4)
    # u * total rounding up to the total itself (as u = 1 does exactly)
    monkeypatch.setattr(sampling.torch, "rand", lambda shape, **kw: torch.ones(shape))
    token, log_prob = sampling.draw(logits, torch.Generator(), Decoding(top_k=2))
    assert token.tolist() == [4] * 4  # the last token that top-2 keeps, never 5
    assert torch.isfinite(log_prob).all()
    monkeypatch.setattr(sampling.torch, "rand", lambda shape, **kw: torch.zeros(shape))
    token, _ = sampling.draw(logits, torch.Generator(), Decoding(top_k=2))
    assert token.tolist() == [2] * 4  # u = 0: the first token with probability > 0


def test_a_trained_policy_matches_a_copy_trained_through_the_hugging_face_forward() -> None:
    """A few optimiser steps on log-probs: the lean path and HF's stay together. In float64:
    three steps at lr 0.5 on a summed loss amplify rounding 15-40x a step, so in float32 the
    copies drift apart by chance on some seeds; in float64 they agree to ~1e-12."""
    ours = policy(seed=3)
    ours.model.double()
    theirs = copy.deepcopy(ours)
    seqs = batch(8, 4, 6, seed=4)
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.5)
    opt_b = torch.optim.SGD(theirs.parameters(), lr=0.5)
    for _ in range(3):
        opt_a.zero_grad()
        (-ours.log_probs(seqs).sum()).backward()
        opt_a.step()
        opt_b.zero_grad()
        logits = hf_logits(theirs, seqs)[:, :-1]
        picked = torch.log_softmax(logits, -1).gather(-1, seqs.tokens[:, 1:, None]).squeeze(-1)
        (-(picked * seqs.completion_mask[:, 1:]).sum()).backward()
        opt_b.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


def test_hidden_states_of_a_window_equal_the_full_forward_values_and_gradients() -> None:
    """`hidden_states(start, end)` skips positions >= end and the last block's queries before
    start (issue 7): the window's values and the gradients they send are the full forward's."""
    ours, theirs, seqs = policy(seed=5), policy(seed=5), batch(6, 4, 11, seed=6)
    start, end = 3, 13
    lean_ours, lean_theirs = LeanGPT2.of(ours.model), LeanGPT2.of(theirs.model)
    window = lean_ours.hidden_states(seqs.tokens, start, end)  # (B, 10, H)
    full = lean_theirs.hidden_states(seqs.tokens)  # (B, T, H), nothing skipped
    assert window.shape == (6, end - start, 32)
    torch.testing.assert_close(window, full[:, start:end], atol=1e-5, rtol=1e-5)
    hf = theirs.model(input_ids=seqs.tokens, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(window, hf[:, start:end], atol=1e-5, rtol=1e-5)
    weights = torch.randn(window.shape, generator=torch.Generator().manual_seed(2))
    (window * weights).sum().backward()
    (full[:, start:end] * weights).sum().backward()
    for (name, a), b in zip(ours.model.named_parameters(), theirs.parameters(), strict=True):
        if b.grad is None:  # the LM head is not used by hidden states
            assert a.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_offset_causal_attention_equals_the_masked_reference_on_both_kernels(monkeypatch) -> None:
    """Queries that are the last T of S positions: the matmul path and the SDPA path (whose
    is_causal would align them to the first positions) both apply the offset causal mask."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (4, 9, 9))
    allowed = torch.ones(4, 9, dtype=torch.bool).tril(diagonal=5)
    scores = (q @ k.transpose(-1, -2)) / 8**0.5
    expected = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(lean_gpt2._attention(q, k, v, causal=True), expected)
    monkeypatch.setattr(lean_gpt2, "_FLASH_ABOVE", 0)
    torch.testing.assert_close(lean_gpt2._attention(q, k, v, causal=True), expected)
    square = lean_gpt2._attention(k, k, v, causal=True)
    full = (k @ k.transpose(-1, -2) / 8**0.5).masked_fill(
        ~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf")
    )
    torch.testing.assert_close(square, full.softmax(-1) @ v)


def test_log_probs_equal_the_plain_computation_on_the_hugging_face_forward() -> None:
    """The training forward (completion positions only, window of the last block) against
    log_softmax of HF's full logits, with right padding in one row."""
    p, seqs = policy(seed=7), batch(5, 4, 9, seed=8)
    completion = seqs.completion_mask.clone()
    completion[2, -4:] = False
    seqs = Sequences(seqs.tokens, seqs.prompt_mask, completion)
    logits = hf_logits(p, seqs)[:, :-1]
    expected = torch.log_softmax(logits, -1).gather(-1, seqs.tokens[:, 1:, None]).squeeze(-1)
    expected = torch.nn.functional.pad(expected, (1, 0)) * completion
    torch.testing.assert_close(p.log_probs(seqs), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("start, end", [(0, 13), (3, 13), (4, 12), (6, 13), (2, 4)])
def test_rows_sharing_a_prompt_compute_it_once_with_the_same_values_and_gradients(
    start: int, end: int, monkeypatch
) -> None:
    """`hidden_states(..., prompt_length=P)`: rows whose first P tokens repeat (DPO's pairs,
    RLOO's k samples per prompt) share those positions' computation; the window's values and
    the gradients they send equal the row-by-row forward's, wherever the window lies. In
    float64: summed in another order, float32 gradients that cancel to near 0 differ by more
    than any fixed tolerance (wpe's gradient at window (4, 12) did by 3e-5)."""
    ours, theirs = policy(seed=9), policy(seed=9)
    ours.model.double(), theirs.model.double()
    seqs = batch(6, 4, 9, seed=10)
    tokens = seqs.tokens.clone()
    tokens[3:, :4] = tokens[:3, :4]  # rows 3..5 repeat the prompts of rows 0..2
    tokens[4, :4] = tokens[0, :4]  # and row 4 that of row 0 (three rows share it)
    lean_ours, lean_theirs = LeanGPT2.of(ours.model), LeanGPT2.of(theirs.model)
    calls = []
    block = LeanGPT2._shared_prompt_block
    monkeypatch.setattr(
        LeanGPT2, "_shared_prompt_block", lambda *a, **k: calls.append(1) or block(*a, **k)
    )
    shared = lean_ours.hidden_states(tokens, start, end, prompt_length=4)
    assert len(calls) == (2 if end > 4 else 0)  # one per block; a window in the prompt: none
    plain = lean_theirs.hidden_states(tokens, start, end)
    assert len(calls) == (2 if end > 4 else 0)
    torch.testing.assert_close(shared, plain, atol=1e-12, rtol=1e-10)
    weights = torch.randn(plain.shape, generator=torch.Generator().manual_seed(4)).double()
    (shared * weights).sum().backward()
    (plain * weights).sum().backward()
    for (name, a), b in zip(ours.model.named_parameters(), theirs.parameters(), strict=True):
        if b.grad is None:
            assert a.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10, msg=name)


def test_policy_log_probs_of_pairs_sharing_prompts_equal_the_hugging_face_forward() -> None:
    """The DPO-shaped batch (chosen and rejected of the same prompts, concatenated) through
    `log_probs`, which takes the shared-prompt path, against HF's full forward."""
    p = policy(seed=11)
    chosen, other = batch(4, 4, 7, seed=12), batch(4, 4, 7, seed=13)
    rejected = Sequences.from_prompt_and_completion(chosen.tokens[:, :4], other.tokens[:, 4:])
    both = Sequences.concat([chosen, rejected])
    logits = hf_logits(p, both)[:, :-1]
    expected = torch.log_softmax(logits, -1).gather(-1, both.tokens[:, 1:, None]).squeeze(-1)
    expected = torch.nn.functional.pad(expected, (1, 0)) * both.completion_mask
    torch.testing.assert_close(p.log_probs(both), expected, atol=1e-5, rtol=1e-5)


def test_sigmoid_form_of_the_tanh_gelu_equals_torch_gelu_and_its_gradient() -> None:
    x = (torch.randn(64, 48, generator=torch.Generator().manual_seed(5)) * 4).requires_grad_()
    reference = x.detach().clone().requires_grad_()
    y = lean_gpt2._gelu(x)
    expected = torch.nn.functional.gelu(reference, approximate="tanh")
    torch.testing.assert_close(y, expected, atol=2e-6, rtol=1e-5)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(6))
    y.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, reference.grad, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the plain forward (sampler)
        torch.testing.assert_close(lean_gpt2._gelu(x), expected, atol=2e-6, rtol=1e-5)
    assert torch.autograd.gradcheck(lean_gpt2._GeluTanh.apply, (x[:3, :4].double(),))


def test_the_gelu_refuses_a_double_backward_instead_of_getting_it_wrong() -> None:
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(lean_gpt2._GeluTanh.apply(x).sum(), x, create_graph=True)
    (g,) = torch.autograd.grad(lean_gpt2._GeluTanh.apply(x).sum(), x)  # first order: fine
    assert torch.isfinite(g).all()
