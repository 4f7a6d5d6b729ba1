"""What every `train_*` function returns: one frozen result type, read by attribute.

`learned` is what the method learned besides the policy: the recovered reward table (MaxEnt IRL,
GAIL, AIRL, tabular IQ-Learn), the discriminator (neural GAIL, AIRL), the implied reward
function (neural IQ-Learn), the reward model (RLHF); None for methods that learn only a policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from irlhf.policies.tabular import TabularPolicy
    from irlhf.protocols import NeuralPolicy

P = TypeVar("P", covariant=True)
L = TypeVar("L", covariant=True)

Learner = TypeVar("Learner", bound="TabularPolicy | NeuralPolicy")
"""The policy an imitation trainer was given and returns (a table is refitted, shape only; a
neural policy is trained in place)."""


@dataclass(frozen=True)
class Trained(Generic[P, L]):
    """A trained policy, its training records and what else the method learned."""

    policy: P
    records: list[dict]
    learned: L
