"""A retrain's parameters, as the dashboard, the CLI and the schedule give them, into the
trainer's configs: what is refused, and what is filled in."""
from __future__ import annotations

import json

import pytest

from core import hyperparams


def test_a_rank_without_an_alpha_gets_twice_the_rank_and_an_alpha_given_is_kept() -> None:
    assert hyperparams.parse({"rank": 8}).train.alpha == 16
    assert hyperparams.parse({"rank": 8, "alpha": 8}).train.alpha == 8
    assert hyperparams.parse({}) == hyperparams.RetrainParams(
        hyperparams.TrainConfig(), hyperparams.DatasetConfig(), hyperparams.GateConfig())


def test_each_part_gets_its_own_keys_and_a_seed_goes_to_both_the_trainer_and_the_split() -> None:
    parsed = hyperparams.parse({"epochs": 2, "general_ratio": 0.1, "gate_questions": 4, "seed": 7})
    assert (parsed.train.epochs, parsed.train.seed) == (2, 7)
    assert (parsed.data.general_ratio, parsed.data.seed) == (0.1, 7)
    assert parsed.gate == hyperparams.GateConfig(gate_questions=4)


def test_module_names_survive_the_json_round_trip_the_worker_makes() -> None:
    config = hyperparams.parse({"target_modules": ["q_proj", "v_proj"]}).train
    assert config.target_modules == ("q_proj", "v_proj")
    assert hyperparams.TrainConfig.from_dict(json.loads(json.dumps(config.as_dict()))) == config
    # One name is a list of one (peft reads a lone string as a pattern for the whole module path).
    assert hyperparams.parse({"target_modules": "q_proj"}).train.target_modules == ("q_proj",)
    assert hyperparams.parse({"target_modules": "All-Linear"}).train.target_modules == "All-Linear"   # peft's spelling-blind
    assert hyperparams.parse({"target_modules": ["model.layers.0.mlp.up_proj"],
                              "attn_implementation": "kernels-community/flash-attn"}).train   # names as given


def test_a_bad_rank_is_the_only_problem_named_not_the_alpha_made_from_it() -> None:
    with pytest.raises(hyperparams.InvalidParams) as refused:
        hyperparams.parse({"rank": 0})
    assert "rank must be" in str(refused.value) and "alpha" not in str(refused.value)


@pytest.mark.parametrize(("params", "problem"), [
    ({"epoch": 2}, "Unknown retrain parameter(s) epoch; known: alpha, attn_implementation, batch_tokens"),
    ({"epochs": "3"}, "epochs must be a whole number of at least 1"),
    ({"epochs": True}, "epochs must be a whole number of at least 1"),
    ({"rank": 2.5}, "rank must be a whole number of at least 1"),
    ({"lr": float("inf")}, "lr must be a positive number"),
    ({"dropout": 1}, "dropout must be at least 0 and below 1"),
    ({"val_ratio": -0.1}, "val_ratio must be at least 0 and below 1"),
    ({"gradient_checkpointing": "yes"}, "gradient_checkpointing must be true, false or \"auto\""),
    ({"compile": 1}, "compile must be true, false or \"auto\""),
    ({"packs_per_forward": 0}, "packs_per_forward must be \"auto\" or a whole number of at least 1"),
    ({"packs_per_forward": "max"}, "packs_per_forward must be \"auto\" or a whole number of at least 1"),
    ({"seed": 2**64}, "seed must be a whole number from 0 to 4294967295"),
    ({"target_modules": []}, "target_modules must be \"all-linear\" or a list of module names"),
    ({"target_modules": 3}, "target_modules must be \"all-linear\" or a list of module names"),
    ({"target_modules": ["q_proj", "lm_head"]}, "target_modules cannot include lm_head"),
    # A list typed with commas on one `KEY=VALUE` line is one text: refused, not queued to fail in peft.
    ({"target_modules": "q_proj, v_proj"}, "target_modules: 'q_proj, v_proj' is not a module name; give several "
                                           "as a list, e.g. target_modules=[\"q_proj\", \"v_proj\"]"),
    ({"attn_implementation": "sdpa, max_seq_len=1024"}, "attn_implementation must be a name such as \"sdpa\""),
    ({"gate_questions": 0}, "gate_questions must be a whole number of at least 1"),
    ({"seed": "x"}, "parameters: seed must be a whole number from 0 to 4294967295."),
])
def test_a_parameter_the_trainer_cannot_use_is_refused_naming_it(params: dict[str, object], problem: str) -> None:
    with pytest.raises(hyperparams.InvalidParams) as refused:
        hyperparams.parse(params)
    assert problem in str(refused.value)
