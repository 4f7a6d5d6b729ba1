"""TabularPolicy accepts what a user holds (numpy arrays, lists) and refuses what it cannot use."""

import numpy as np
import pytest
import torch

from irlhf.metrics.exposure import exposure_bias
from irlhf.policies import TabularPolicy
from irlhf.worlds import make_world


def test_a_numpy_table_is_converted_and_scores_like_the_tensor():
    world = make_world("tiny")
    rng = np.random.default_rng(0)
    table = rng.dirichlet(np.ones(world.vocab_size), size=world.n_states)  # (S, V) float64
    from_numpy = TabularPolicy(table)
    assert from_numpy.probs.dtype == torch.float64 and from_numpy.probs.shape == table.shape
    from_tensor = TabularPolicy(torch.from_numpy(table))
    a, b = exposure_bias(world, from_numpy), exposure_bias(world, from_tensor)
    np.testing.assert_array_equal(a.regret, b.regret)
    assert TabularPolicy([[0.5, 0.5], [1.0, 0.0]]).probs.tolist() == [[0.5, 0.5], [1.0, 0.0]]


def test_a_table_with_gradients_is_refused_with_a_hint():
    logits = torch.zeros(3, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r"probs.detach\(\)"):
        TabularPolicy(torch.softmax(logits, dim=1))
    TabularPolicy(torch.softmax(logits, dim=1).detach())  # detached: fine


@pytest.mark.parametrize("bad", ["rows", [[0.5, "x"]], object()])
def test_what_cannot_be_a_table_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match="probs must be"):
        TabularPolicy(bad)
