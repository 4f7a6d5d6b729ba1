"""The `[world]` table of the imitation and rlhf kinds (`irlhf.kinds.world_spec`): neural worlds
need neural learners, tags and untagged specs are accepted, unknown worlds are rejected."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from irlhf.kinds.common import PolicySpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.rlhf import RLHFRunConfig
from irlhf.kinds.world_spec import OracleWorldSpec, TextWorldSpec
from irlhf.worlds.oracle import OracleSpec

NEURAL = {"policy": {"kind": "causal_lm"}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"world": {"kind": "oracle"}}, 'policy.kind must be "causal_lm" in the oracle world'),
        ({"world": {"kind": "mars"}, **NEURAL}, "does not match any of the expected tags"),
        ({**NEURAL, "algorithm": "gkd", "policy": {"kind": "tabular"}}, "needs policy.kind"),
        ({"world": {"kind": "oracle", "n_states": 3}, **NEURAL}, "n_states"),
    ],
)
def test_imitation_config_checks_the_world(raw: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ImitationConfig.model_validate(raw)


def test_world_specs_accept_tables_and_untagged_specs() -> None:
    config = ImitationConfig(world=OracleSpec(horizon=8), policy=PolicySpec(kind="causal_lm"))
    assert isinstance(config.world, OracleWorldSpec) and config.world.horizon == 8
    table = ImitationConfig.model_validate({"world": {"kind": "text", "horizon": 8}, **NEURAL})
    assert isinstance(table.world, TextWorldSpec)
    explicit = ImitationConfig.model_validate({"world": {"kind": "automaton", "preset": "tiny"}})
    assert explicit == ImitationConfig.model_validate({"world": {"preset": "tiny"}})


def test_rlhf_config_checks_the_world() -> None:
    with pytest.raises(ValidationError, match='reward_model.kind must be "neural"'):
        RLHFRunConfig.model_validate({"world": {"kind": "oracle"}, **NEURAL})
    with pytest.raises(ValidationError, match='"text" is not supported by the rlhf kind'):
        RLHFRunConfig.model_validate({"world": {"kind": "text"}, **NEURAL})
