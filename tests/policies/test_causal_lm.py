"""CausalLMPolicy: alignment of logits and log-probs, the action vocabulary, the KV-cached sampler
against a no-cache reference and against the softmax it should draw from, and safe persistence."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from irlhf.policies.causal_lm import CausalLMPolicy, default_device
from irlhf.policies.lean_gpt2 import LeanGPT2
from irlhf.types import Sequences
from irlhf.worlds.oracle import LMDemonstrator

VOCAB, ACTIONS = 20, 16  # ids 16..19 are prompt-only


def tiny(arch: str = "gpt2", seed: int = 0, scale: float = 1.0) -> CausalLMPolicy:
    """A 2-layer, 32-wide policy; `scale` sharpens its next-token distributions."""
    policy = CausalLMPolicy.tiny(
        VOCAB, ACTIONS, n_layer=2, n_embd=32, n_head=4, max_length=64, arch=arch, seed=seed
    )
    # scaling the final norm's affine map scales the logits, leaving the input embeddings alone
    norm = policy.model.transformer.ln_f if arch != "llama" else policy.model.model.norm
    with torch.no_grad():
        for param in norm.parameters():
            param.mul_(scale)
    return policy


def prompts(batch: int, length: int = 4, seed: int = 0) -> torch.Tensor:
    """Prompts drawn from the whole vocabulary, prompt-only ids included."""
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def right_padded() -> Sequences:
    """Two sequences, prompt 3; the second has 2 completion tokens then 3 padding positions."""
    tokens = torch.tensor([[17, 3, 18, 5, 9, 1, 0, 4], [2, 16, 7, 11, 12, 0, 0, 0]])
    prompt_mask = torch.zeros_like(tokens, dtype=torch.bool)
    prompt_mask[:, :3] = True
    completion_mask = ~prompt_mask
    completion_mask[1, 5:] = False
    return Sequences(tokens, prompt_mask, completion_mask)


def greedy_without_cache(policy: CausalLMPolicy, prompt: torch.Tensor, n: int) -> torch.Tensor:
    """The reference: recompute the full forward pass for every new token."""
    tokens = prompt
    with torch.no_grad():
        for _ in range(n):
            logits = policy.model(input_ids=tokens, use_cache=False).logits[:, -1, :ACTIONS]
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_tiny_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b, c = tiny(seed=0), tiny(seed=0), tiny(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.model.lm_head.weight, c.model.lm_head.weight)
    assert all(m.p == 0 for m in a.model.modules() if isinstance(m, torch.nn.Dropout))
    assert a.device == torch.device("cpu") == default_device()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_next_token_logits_are_aligned_with_tokens(arch: str) -> None:
    policy, seqs = tiny(arch), right_padded()
    logits = policy.next_token_logits(seqs)
    assert logits.shape == (2, 8, ACTIONS)
    assert torch.equal(logits[:, 0], torch.zeros(2, ACTIONS))
    with torch.no_grad():  # position t sees exactly tokens < t
        for t in range(1, 8):
            prefix = policy.model(input_ids=seqs.tokens[:1, :t]).logits[0, -1, :ACTIONS]
            torch.testing.assert_close(logits[0, t], prefix, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_log_probs_are_the_log_softmax_picked_by_hand(arch: str) -> None:
    policy, seqs = tiny(arch, scale=5.0), right_padded()
    log_probs = policy.log_probs(seqs)
    logits = policy.next_token_logits(seqs)
    assert log_probs.shape == (2, 8)
    for b in range(2):
        for t in range(8):
            expected = 0.0
            if seqs.completion_mask[b, t]:
                expected = torch.log_softmax(logits[b, t], -1)[seqs.tokens[b, t]].item()
            assert log_probs[b, t].item() == pytest.approx(expected, abs=1e-5)
    # right padding changes nothing: the second row scored alone, unpadded, gives the same sum
    alone = policy.log_probs(seqs[1:])[:, :5]
    unpadded = Sequences(
        seqs.tokens[1:, :5], seqs.prompt_mask[1:, :5], seqs.completion_mask[1:, :5]
    )
    torch.testing.assert_close(policy.log_probs(unpadded), alone, atol=1e-5, rtol=0)


def test_log_probs_refuses_non_action_completions() -> None:
    seqs = Sequences.from_prompt_and_completion(torch.tensor([[1, 2]]), torch.tensor([[17]]))
    with pytest.raises(ValueError, match=">= 16"):
        tiny().log_probs(seqs)


def test_prompt_only_ids_are_never_sampled() -> None:
    policy = tiny("llama")  # untied head: make the prompt-only ids win by a mile without the cut
    with torch.no_grad():
        policy.model.lm_head.weight[ACTIONS:] *= 1000
    full = policy.model(input_ids=prompts(64)).logits[:, -1]
    assert (full.argmax(-1) >= ACTIONS).float().mean() > 0.5  # they would be sampled
    seqs = policy.sample(prompts(64), 16, torch.Generator().manual_seed(0), temperature=2.0)
    completion = seqs.tokens[seqs.completion_mask]
    assert completion.numel() == 64 * 16 and int(completion.max()) < ACTIONS


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_greedy_with_kv_cache_equals_greedy_without(arch: str) -> None:
    policy, prompt = tiny(arch, scale=3.0), prompts(8, length=5)
    seqs = policy.sample(prompt, 20, torch.Generator().manual_seed(0), greedy=True)
    assert torch.equal(seqs.tokens, greedy_without_cache(policy, prompt, 20))
    assert seqs.prompt_mask[:, :5].all() and not seqs.prompt_mask[:, 5:].any()
    assert seqs.completion_mask[:, 5:].all() and not seqs.completion_mask[:, :5].any()


@pytest.mark.parametrize("arch", ["llama", "bloom"])
def test_hf_sampler_uses_the_supported_cache_api_and_equals_a_plain_greedy_loop(arch: str) -> None:
    """LLaMA and BLOOM take the Hugging Face sampler, not `LeanGPT2`: their KV-cached decoding
    (the policy's and the noisy demonstrator's) warns about nothing, e.g. not transformers'
    FutureWarning for the deprecated `past_key_values=`, and picks the tokens of a full forward
    pass per step."""
    policy, prompt, n = tiny(arch, scale=3.0), prompts(6, length=3, seed=1), 12
    assert LeanGPT2.of(policy.model) is None
    # epsilon > 0 takes LMDemonstrator's own cached loop; at 1e-9 noise it is greedy in practice
    almost_greedy = LMDemonstrator(policy, temperature=0.0, epsilon=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seqs = policy.sample(prompt, n, torch.Generator().manual_seed(0), greedy=True)
        demo = almost_greedy.sample(prompt, n, torch.Generator().manual_seed(0))
    expected = greedy_without_cache(policy, prompt, n)
    assert expected[:, 3:].unique().numel() > 2  # not one token repeated
    assert torch.equal(seqs.tokens, expected)
    assert torch.equal(demo.tokens, expected)


def test_sampling_is_reproducible_from_the_generator_only() -> None:
    policy, prompt = tiny(), prompts(16)
    a = policy.sample(prompt, 12, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG plays no part
    b = policy.sample(prompt, 12, torch.Generator().manual_seed(7))
    c = policy.sample(prompt, 12, torch.Generator().manual_seed(8))
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


@pytest.mark.parametrize("filters", [{"top_k": 1}, {"top_p": 1e-6}])
def test_top_k_1_and_a_tiny_top_p_are_greedy(filters: dict) -> None:
    policy, prompt = tiny(scale=3.0), prompts(8)
    greedy = policy.sample(prompt, 15, torch.Generator().manual_seed(0), greedy=True)
    filtered = policy.sample(prompt, 15, torch.Generator().manual_seed(0), **filters)
    assert torch.equal(filtered.tokens, greedy.tokens)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_sampled_log_probs_equal_the_scored_log_probs(arch: str) -> None:
    policy = tiny(arch, scale=5.0)
    seqs, sampled = policy.sample_with_log_probs(prompts(16), 20, torch.Generator().manual_seed(0))
    scored = policy.log_probs(seqs)
    torch.testing.assert_close(sampled, scored.detach(), atol=1e-4, rtol=0)
    (-scored.sum()).backward()  # sampled tokens can be trained on (no inference tensors leak)
    assert policy.model.lm_head.weight.grad is not None


def expected_distribution(logits: torch.Tensor, temperature: float, top_k, top_p) -> torch.Tensor:
    """The filtered next-token distribution, written out the slow way: top-k, renormalise, top-p."""
    probs = torch.softmax(logits / temperature, -1)
    order = probs.argsort(descending=True).tolist()[: top_k or len(probs)]
    mass = sum(probs[token].item() for token in order)
    keep, kept_mass = torch.zeros_like(probs, dtype=torch.bool), 0.0
    for token in order:
        if top_p is not None and kept_mass >= top_p:
            break
        keep[token] = True
        kept_mass += probs[token].item() / mass
    return probs * keep / (probs * keep).sum()


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, None, None), (0.6, None, None), (1.0, 4, None), (1.3, None, 0.7), (1.5, 5, 0.8)],
)
def test_empirical_frequencies_match_the_distribution(temperature, top_k, top_p) -> None:
    policy, n = tiny("llama", scale=8.0), 4000
    prompt = prompts(1, seed=3)
    seqs = policy.sample(
        prompt.expand(n, -1), 1, torch.Generator().manual_seed(0), temperature, top_k, top_p
    )
    frequencies = torch.bincount(seqs.tokens[:, -1], minlength=ACTIONS).double() / n
    logits = policy.next_token_logits(seqs[:1])[0, -1].detach().double()
    expected = expected_distribution(logits, temperature, top_k, top_p)
    assert expected.max() < 0.9 and (expected > 0.02).sum() >= 3  # a distribution worth testing
    assert (frequencies[expected == 0] == 0).all()
    assert (frequencies - expected).abs().max() < 0.03


def test_sampling_restores_train_mode_and_validates_arguments() -> None:
    policy, gen = tiny().train(), torch.Generator().manual_seed(0)
    policy.sample(prompts(2), 3, gen)
    assert policy.model.training
    assert policy.sample(prompts(2), 0, gen).tokens.shape == (2, 4)
    for bad in [{"temperature": 0.0}, {"top_k": 0}, {"top_p": 0.0}, {"max_new_tokens": 61}]:
        kwargs = {"max_new_tokens": 3, **bad}
        with pytest.raises(ValueError):
            policy.sample(prompts(2), generator=gen, **kwargs)
    with pytest.raises(ValueError, match="action_vocab_size"):
        CausalLMPolicy(policy.model, VOCAB + 1)
    with pytest.raises(ValueError, match="arch"):
        CausalLMPolicy.tiny(VOCAB, arch="mamba")


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bloom"])
def test_save_and_load_give_identical_logits(arch: str, tmp_path: Path) -> None:
    policy, seqs = tiny(arch, seed=3), right_padded()
    policy.save(tmp_path / "policy")
    assert (tmp_path / "policy" / "model.safetensors").is_file()
    assert not list((tmp_path / "policy").glob("*.bin"))
    loaded = CausalLMPolicy.from_pretrained(tmp_path / "policy")
    assert loaded.action_vocab_size == ACTIONS and type(loaded.model) is type(policy.model)
    assert torch.equal(loaded.next_token_logits(seqs), policy.next_token_logits(seqs))
    assert CausalLMPolicy.from_pretrained(tmp_path / "policy", VOCAB).action_vocab_size == VOCAB


def assert_one_line_value_error(path: Path, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        CausalLMPolicy.from_pretrained(path)
    assert "\n" not in str(info.value)


def test_from_pretrained_refuses_missing_and_malformed_directories(tmp_path: Path) -> None:
    assert_one_line_value_error(tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_value_error(tmp_path / "empty", "no config.json")
    tiny().save(tmp_path / "ok")
    weights = (tmp_path / "ok" / "model.safetensors").read_bytes()
    for name, corrupt in [("truncated", weights[: len(weights) // 2]), ("garbage", b"\x00" * 99)]:
        tiny().save(tmp_path / name)
        (tmp_path / name / "model.safetensors").write_bytes(corrupt)
        assert_one_line_value_error(tmp_path / name, "could not be loaded")
    tiny().save(tmp_path / "wrong")  # valid safetensors, but not this model's weights
    save_file({"foo": torch.zeros(3)}, str(tmp_path / "wrong" / "model.safetensors"))
    assert_one_line_value_error(tmp_path / "wrong", "lacks weights")


def test_from_pretrained_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tiny()
    policy.save(tmp_path / "pickled")
    (tmp_path / "pickled" / "model.safetensors").unlink()
    torch.save(policy.model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    assert_one_line_value_error(tmp_path / "pickled", "pickle")
    policy.save(tmp_path / "both")  # a .bin beside the safetensors is ignored, never opened
    (tmp_path / "both" / "pytorch_model.bin").write_bytes(b"not a pickle")
    loaded = CausalLMPolicy.from_pretrained(tmp_path / "both")
    assert torch.equal(loaded.model.lm_head.weight, policy.model.lm_head.weight)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_acting_error_mixes_uniform_noise_into_scores_and_samples(arch: str) -> None:
    eps, n = 0.3, 6000
    plain = tiny(arch, scale=8.0)
    noisy = tiny(arch, scale=8.0)
    noisy.act_epsilon = eps
    prompt = prompts(1, seed=3)
    seqs = noisy.sample(prompt.expand(n, -1), 1, torch.Generator().manual_seed(0))
    # the mixture written out by hand from the plain network's softmax
    network = torch.softmax(plain.next_token_logits(seqs[:1])[0, -1].detach().double(), -1)
    expected = (1 - eps) * network + eps / ACTIONS
    scored = torch.softmax(noisy.next_token_logits(seqs[:1])[0, -1].detach().double(), -1)
    torch.testing.assert_close(scored, expected, atol=1e-6, rtol=0)
    frequencies = torch.bincount(seqs.tokens[:, -1], minlength=ACTIONS).double() / n
    assert (frequencies - expected).abs().max() < 0.03
    # sampled log-probs are the mixture's, as scored
    seqs, sampled = noisy.sample_with_log_probs(prompts(8), 10, torch.Generator().manual_seed(1))
    torch.testing.assert_close(sampled, noisy.log_probs(seqs).detach(), atol=1e-4, rtol=0)
    greedy = noisy.sample(prompt.expand(n, -1), 1, torch.Generator().manual_seed(0), greedy=True)
    best = int(network.argmax())
    share = float((greedy.tokens[:, -1] == best).double().mean())
    assert abs(share - (1 - eps + eps / ACTIONS)) < 0.03  # greedy with an acting error
    with pytest.raises(ValueError, match="act_epsilon"):
        CausalLMPolicy(plain.model, ACTIONS, act_epsilon=1.0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_steer_replaces_tokens_and_the_cache_continues_from_them(arch: str) -> None:
    policy, prompt = tiny(arch, scale=3.0), prompts(4)
    forced = torch.tensor([3, 7, 1, 12])

    def steer(step: int, drawn: torch.Tensor) -> torch.Tensor:
        return forced.clone() if step == 2 else drawn

    seqs = policy.sample(prompt, 6, torch.Generator().manual_seed(0), greedy=True, steer=steer)
    assert torch.equal(seqs.tokens[:, 4 + 2], forced)
    # greedy continuation of the forced prefix, recomputed without a cache
    reference = greedy_without_cache(policy, seqs.tokens[:, : 4 + 3], 3)
    assert torch.equal(seqs.tokens, reference)


def windowed(window: int | None, n_layer: int = 2, seed: int = 0) -> CausalLMPolicy:
    """A 32-wide LLaMA whose attention sees the last `window` tokens (None: all of them)."""
    return CausalLMPolicy.tiny(
        VOCAB, ACTIONS, n_layer, n_embd=32, n_head=4, max_length=64, arch="llama", seed=seed,
        window=window,
    )  # fmt: skip


def whole_prompt_logits(policy: CausalLMPolicy, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, A): the policy's logits at every position of `tokens`, all of it a prompt."""
    prompt = torch.ones_like(tokens, dtype=torch.bool)
    seqs = Sequences(tokens, prompt, torch.zeros_like(prompt))
    with torch.no_grad():
        return policy.action_logits(seqs)[0]


@pytest.mark.parametrize("n_layer", [1, 2])
@pytest.mark.parametrize("window", [1, 3])
def test_window_hides_every_token_before_it(window: int, n_layer: int) -> None:
    """Each layer lets position t see positions t - window + 1..t, so the logits at t see the
    last `field` = n_layer * (window - 1) + 1 tokens (layers compound): changing every token
    before them changes nothing at t, changing the oldest one inside changes every row."""
    policy, tokens, T = windowed(window, n_layer), prompts(4, length=16), 16
    field = n_layer * (window - 1) + 1
    base = whole_prompt_logits(policy, tokens)  # (B, T, A)
    for t in range(field, T):
        outside, inside = tokens.clone(), tokens.clone()
        outside[:, : t - field + 1] = (outside[:, : t - field + 1] + 7) % VOCAB
        inside[:, t - field + 1] = (inside[:, t - field + 1] + 7) % VOCAB
        assert torch.equal(whole_prompt_logits(policy, outside)[:, t], base[:, t])
        moved = (whole_prompt_logits(policy, inside)[:, t] - base[:, t]).abs().amax(dim=-1)
        assert bool((moved > 1e-4).all()), (t, moved)


@pytest.mark.parametrize("window", [1, 2, 3])
def test_windowed_kv_cached_sampling_equals_greedy_without_a_cache(window: int) -> None:
    """20 new tokens after a 5-token prompt, far past the window: the KV-cached sampler (whose
    cache keeps window - 1 keys per layer, or all of them at window 1) and the noisy
    demonstrator's own cached loop pick the tokens of a full forward pass per step, and warn
    about nothing."""
    policy, prompt, n = windowed(window), prompts(6, length=5, seed=2), 20
    with torch.no_grad():
        for param in policy.model.model.norm.parameters():
            param.mul_(3.0)  # sharper logits: fewer near-ties for argmax to break
    almost_greedy = LMDemonstrator(policy, temperature=0.0, epsilon=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seqs = policy.sample(prompt, n, torch.Generator().manual_seed(0), greedy=True)
        demo = almost_greedy.sample(prompt, n, torch.Generator().manual_seed(0))
    expected = greedy_without_cache(policy, prompt, n)
    assert expected[:, 5:].unique().numel() > 2  # not one token repeated
    assert torch.equal(seqs.tokens, expected)
    assert torch.equal(demo.tokens, expected)


def test_no_window_is_the_plain_llama_and_a_window_changes_only_the_mask() -> None:
    """window=None builds exactly today's LLaMA; a windowed model of the same seed has the same
    parameters, so its logits equal the LLaMA's wherever the whole prefix fits every layer's
    window (t < window), and everywhere once the window covers the context."""
    plain = CausalLMPolicy.tiny(VOCAB, ACTIONS, n_embd=32, max_length=64, arch="llama", seed=3)
    default, narrow, wide = windowed(None, seed=3), windowed(4, seed=3), windowed(64, seed=3)
    assert type(default.model) is type(plain.model) and default.model.config.model_type == "llama"
    reference = plain.model.state_dict()
    for policy in (default, narrow, wide):
        state = policy.model.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    tokens = prompts(3, length=12)
    expected = whole_prompt_logits(plain, tokens)
    assert torch.equal(whole_prompt_logits(default, tokens), expected)
    torch.testing.assert_close(whole_prompt_logits(wide, tokens), expected)
    narrowed = whole_prompt_logits(narrow, tokens)
    torch.testing.assert_close(narrowed[:, :4], expected[:, :4])
    assert not torch.allclose(narrowed[:, 4:], expected[:, 4:])


@pytest.mark.parametrize(("arch", "window"), [("gpt2", 2), ("bloom", 2), ("llama", 0)])
def test_window_needs_llama_and_a_positive_width(arch: str, window: int) -> None:
    with pytest.raises(ValueError, match="window") as error:
        CausalLMPolicy.tiny(VOCAB, ACTIONS, arch=arch, window=window)
    assert "\n" not in str(error.value)
