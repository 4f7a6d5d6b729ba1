"""The config of the `irl` kind and what its tabular and neural halves share.

`algorithm` names the method (maxent_irl, gail, airl, iq_learn) and `policy.kind` the learner;
together they choose the one `[method]` table a run has: a tagged union of the methods' configs
(the tag, `method.name`, is `algorithm` for a tabular learner and `neural_<algorithm>` for a
neural one, and is filled in when the table does not give it). So a run's id depends only on the
method it runs, not on the defaults of the six it does not:

    kind = "irl"
    algorithm = "gail"
    [world]           # an automaton (no kind), or kind = "flipflop" (irlhf.kinds.world_spec)
    kind = "flipflop"
    preset = "absorbing"
    [policy]
    kind = "causal_lm"
    [method]          # neural GAIL's settings (method.name = "neural_gail" is filled in)
    rounds = 20
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from irlhf.algorithms.adversarial_irl import AdversarialIRLConfig, GAILConfig
from irlhf.algorithms.iq_learn import IQLearnConfig
from irlhf.algorithms.maxent_irl import MaxEntIRLConfig
from irlhf.algorithms.neural_adversarial_irl import NeuralAdversarialIRLConfig, NeuralGAILConfig
from irlhf.algorithms.neural_iq_learn import NeuralIQLearnConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import FROZEN, DemoSpec, PolicySpec
from irlhf.kinds.world_spec import ExactWorldSpec, make_world
from irlhf.worlds import AutomatonSpec, AutomatonWorld, Demonstrations


class MaxEntIRLMethod(MaxEntIRLConfig):
    """MaxEnt IRL, exact and tabular (`algorithm = "maxent_irl"`)."""

    name: Literal["maxent_irl"] = "maxent_irl"
    """The method this table configures."""


class GAILMethod(GAILConfig):
    """Tabular GAIL (`algorithm = "gail"`, a tabular learner)."""

    name: Literal["gail"] = "gail"
    """The method this table configures."""


class AIRLMethod(AdversarialIRLConfig):
    """Tabular AIRL (`algorithm = "airl"`, a tabular learner)."""

    name: Literal["airl"] = "airl"
    """The method this table configures."""


class IQLearnMethod(IQLearnConfig):
    """Tabular IQ-Learn (`algorithm = "iq_learn"`, a tabular learner)."""

    name: Literal["iq_learn"] = "iq_learn"
    """The method this table configures."""


class NeuralGAILMethod(NeuralGAILConfig):
    """Neural GAIL (`algorithm = "gail"`, `policy.kind = "causal_lm"`)."""

    name: Literal["neural_gail"] = "neural_gail"
    """The method this table configures."""


class NeuralAIRLMethod(NeuralAdversarialIRLConfig):
    """Neural AIRL (`algorithm = "airl"`, `policy.kind = "causal_lm"`)."""

    name: Literal["neural_airl"] = "neural_airl"
    """The method this table configures."""


class NeuralIQLearnMethod(NeuralIQLearnConfig):
    """Neural IQ-Learn (`algorithm = "iq_learn"`, `policy.kind = "causal_lm"`)."""

    name: Literal["neural_iq_learn"] = "neural_iq_learn"
    """The method this table configures."""


METHOD_TABLES: dict[str, type[BaseModel]] = {
    table.model_fields["name"].default: table
    for table in (
        MaxEntIRLMethod,
        GAILMethod,
        AIRLMethod,
        IQLearnMethod,
        NeuralGAILMethod,
        NeuralAIRLMethod,
        NeuralIQLearnMethod,
    )
}
"""method.name -> the table's model."""

IRLMethodConfig = Annotated[
    MaxEntIRLMethod
    | GAILMethod
    | AIRLMethod
    | IQLearnMethod
    | NeuralGAILMethod
    | NeuralAIRLMethod
    | NeuralIQLearnMethod,
    Field(discriminator="name"),
]
IRLAlgorithm = Literal["maxent_irl", "gail", "airl", "iq_learn"]


def method_name(algorithm: str, learner: str) -> str:
    """The `[method]` table's name for `algorithm` and a learner of kind `learner`."""
    return algorithm if learner == "tabular" else f"neural_{algorithm}"


def _learner_of(policy: Any) -> Any:
    if isinstance(policy, dict):
        return policy.get("kind", "tabular")
    return getattr(policy, "kind", "tabular")


class IRLConfig(BaseModel):
    """One inverse-RL run (`kind = "irl"`)."""

    model_config = FROZEN
    kind: Literal["irl"] = "irl"
    seed: int = 0
    """Seed of the demonstrations and of the learner's rollouts (the world has its own seed)."""
    world: ExactWorldSpec = AutomatonSpec(preset="absorbing")
    """The world: an automaton (`preset = "absorbing"` plus any knob overrides) or the
    flip-flop trap world (`kind = "flipflop"` plus its knobs; `irlhf.kinds.world_spec`)."""
    algorithm: IRLAlgorithm = "maxent_irl"
    """"maxent_irl", "gail", "airl" or "iq_learn"."""
    policy: PolicySpec = PolicySpec()
    """The learner: "tabular" (exact) or "causal_lm" (gail, airl, iq_learn; Monte Carlo)."""
    demonstrations: DemoSpec = DemoSpec()
    method: IRLMethodConfig = MaxEntIRLMethod()
    """The chosen method's settings (the table of `method_name(algorithm, policy.kind)`)."""
    pretrain: SFTConfig = SFTConfig(steps=0)
    """Neural: behaviour cloning on the same demonstrations before the method (steps = 0: start
    from the random network)."""
    mc_samples: int = Field(512, ge=2)
    """Neural: sampled sequences per Monte-Carlo exposure estimate."""

    @model_validator(mode="before")
    @classmethod
    def _name_the_method(cls, data: Any) -> Any:
        """Tag the `[method]` table with the name `algorithm` and `policy.kind` choose (an
        absent table: that method's defaults; a method's own untagged config: tagged)."""
        if not isinstance(data, dict):
            return data
        algorithm = data.get("algorithm", cls.model_fields["algorithm"].default)
        learner = _learner_of(data.get("policy"))
        if not (isinstance(algorithm, str) and isinstance(learner, str)):
            return data  # the field validators report it
        name = method_name(algorithm, learner)
        method = data.get("method", {})
        if isinstance(method, BaseModel) and "name" not in type(method).model_fields:
            method = method.model_dump()
        if name in METHOD_TABLES and isinstance(method, dict) and "name" not in method:
            data = {**data, "method": {"name": name, **method}}
        return data

    @model_validator(mode="after")
    def _method_matches_algorithm(self) -> IRLConfig:
        name = method_name(self.algorithm, self.policy.kind)
        if name not in METHOD_TABLES:
            raise ValueError(
                f'policy.kind = "{self.policy.kind}" needs algorithm "gail", "airl" or '
                f'"iq_learn" (got "{self.algorithm}": an exact tabular solver)'
            )
        if self.method.name != name:
            raise ValueError(
                f'method.name must be "{name}" for algorithm "{self.algorithm}" with a '
                f'{self.policy.kind} learner (got "{self.method.name}")'
            )
        return self

    @property
    def neural(self) -> bool:
        return self.policy.kind != "tabular"


def irl_world(config: IRLConfig) -> AutomatonWorld:
    """The world of an `irl` run: an `AutomatonWorld` (the flip-flop world is one)."""
    world = make_world(config.world)
    if not isinstance(world, AutomatonWorld):  # ExactWorldSpec admits no other world
        raise TypeError(f"the irl kind needs an automaton world, not {type(world).__name__}")
    return world


def feedback_of(demos: Demonstrations, learner_rollouts: int) -> dict[str, float]:
    """The feedback an IRL run used: demonstration tokens and learner rollouts."""
    return {
        "demo_tokens": float(demos.n_tokens),
        "learner_rollouts": float(learner_rollouts),
    }
