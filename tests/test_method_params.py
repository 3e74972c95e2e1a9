"""Each method's `method.params` is a typed dataclass checked when the method is built (issue 17)."""

from __future__ import annotations

import pytest

from workbench.config import load_config
from workbench.methods import create_method, list_methods
from workbench.methods.params import MethodParamsError
from workbench.methods.registry import METHODS


def test_a_misspelt_param_fails_naming_the_closest_valid_one():
    cfg = load_config("tiny", ["method.name=cgns", "method.params.clustr_k=4"])
    with pytest.raises(MethodParamsError, match="clustr_k is not a parameter of method 'cgns'; did you mean 'cluster_k'"):
        create_method("cgns", cfg)


def test_values_from_a_shell_get_the_declared_types_and_upper_case_seed_names_work():
    cfg = load_config("tiny", ["method.name=clip", "method.params.FREEZE_VISION_ENCODER=yes",
                               "method.params.steps_per_epoch=3"])
    method = create_method("clip", cfg)
    assert method.p.freeze_vision_encoder is True and method.p.steps_per_epoch == 3
    with pytest.raises(MethodParamsError, match="LEARNABLE_TEMPERATURE='maybe'.*expected bool"):
        create_method("clip", load_config("tiny", ["method.params.LEARNABLE_TEMPERATURE=maybe"]))


def test_medtrim_margin_is_its_own_param_with_the_seeds_models_margin_as_fallback():
    seed_style = create_method("medtrim", load_config("tiny", ["method.name=medtrim", "models.margin=0.7"]))
    own = create_method("medtrim", load_config("tiny", ["method.name=medtrim", "models.margin=0.7",
                                                        "method.params.margin=0.2"]))
    assert seed_style.p.margin is None and own.p.margin == pytest.approx(0.2)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_declares_typed_params_with_defaults(name):
    import dataclasses

    schema = METHODS.get(name).Params
    assert dataclasses.is_dataclass(schema)
    defaults = schema()
    assert defaults.steps_per_epoch == 0  # every method takes the shared knobs
