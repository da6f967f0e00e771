"""Config dicts, spec strings and config files for every registered kind."""

from __future__ import annotations

import json

import pytest

import optstrat
from optstrat.clipping import Clipper
from optstrat.schedules import Schedule
from tests.kind_examples import CLIPPER_EXAMPLES, SCHEDULE_EXAMPLES

ALL_EXAMPLES = [
    pytest.param(example, id=f"{kind}-{index}")
    for examples in (SCHEDULE_EXAMPLES, CLIPPER_EXAMPLES)
    for kind, items in examples.items()
    for index, example in enumerate(items)
]


def test_every_kind_has_examples():
    assert set(optstrat.kinds(Schedule)) <= set(SCHEDULE_EXAMPLES)
    assert set(optstrat.kinds(Clipper)) <= set(CLIPPER_EXAMPLES)


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_config_round_trip(example):
    config = example.to_config()
    rebuilt = optstrat.from_config(config)
    assert rebuilt == example
    assert hash(rebuilt) == hash(example)
    assert json.loads(json.dumps(config)) == config


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_spec_round_trip(example):
    spec = optstrat.to_spec(example)
    assert optstrat.from_spec(spec) == example


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_config_writes_every_field(example):
    import dataclasses

    names = {field.name for field in dataclasses.fields(example) if field.init}
    assert set(example.to_config()) == names | {"kind"}


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_file_round_trip(example, suffix, tmp_path):
    path = tmp_path / f"policy{suffix}"
    optstrat.dump(example, path)
    assert optstrat.load(path) == example


def test_omitted_fields_take_defaults():
    schedule = optstrat.from_config({"kind": "cosine_decay", "init_value": 1.0, "decay_steps": 10})
    assert schedule == optstrat.CosineDecay(init_value=1.0, decay_steps=10, end_value=0.0, exponent=1.0)


def test_unknown_kind_names_closest():
    with pytest.raises(ValueError, match=r"unknown kind 'cosine_decy'\. Did you mean 'cosine_decay'\?"):
        optstrat.from_config({"kind": "cosine_decy", "init_value": 1.0})


def test_unknown_kind_lists_kinds_by_group():
    with pytest.raises(ValueError) as raised:
        optstrat.from_config({"kind": "clip_by_globl_norm", "max_norm": 1.0})

    message = str(raised.value)
    assert "Did you mean 'clip_by_global_norm'?" in message
    assert "Valid kinds: schedules: clamp, constant," in message
    assert "; clippers: adaptive_clip, autoclip, clip_by_global_norm," in message
    assert "others" not in message


def test_unknown_field_names_closest():
    with pytest.raises(ValueError, match=r"unknown field 'decay_step' for kind 'cosine_decay'\. Did you mean 'decay_steps'"):
        optstrat.from_spec("cosine_decay(init_value=1.0, decay_step=10)")


def test_config_without_kind():
    with pytest.raises(ValueError, match="config must have a 'kind' key"):
        optstrat.from_config({"value": 1.0})


def test_config_not_a_dict():
    with pytest.raises(TypeError, match="config must be a dict"):
        optstrat.from_config(["constant"])


def test_kind_not_a_string():
    with pytest.raises(TypeError, match="kind must be a string, got 3"):
        optstrat.from_config({"kind": 3})


def test_spec_nested_and_negative_literals():
    schedule = optstrat.from_spec(
        "join(schedules=[constant(value=-1e-3), cosine_decay(init_value=1.0, decay_steps=1e2)], boundaries=(5,))"
    )
    assert schedule.schedules[0].value == -1e-3
    assert schedule.schedules[1].decay_steps == 100
    assert schedule.boundaries == (5,)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("__import__('os').system('true')", "expected a call"),
        ("constant(value=1.0 + 2.0)", r"'1\.0 \+ 2\.0' is not a literal"),
        ("constant(value=x)", "'x' is not a literal"),
        ("constant(1.0)", "must be given by name"),
        ("constant(**{'value': 1.0})", r"'\*\*' arguments are not allowed"),
        ("os.path(value=1.0)", "expected a call"),
        ("constant(value=1.0", "invalid spec"),
        ("[constant(value=1.0)]", "expected a call"),
        ("constant(value=(lambda: 1)())", "expected a call|is not a literal"),
    ],
)
def test_spec_rejects_non_literals(spec, message):
    with pytest.raises(ValueError, match=message):
        optstrat.from_spec(spec)


def test_spec_not_a_string():
    with pytest.raises(TypeError, match="spec must be a string"):
        optstrat.from_spec(3)


def test_file_with_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.json, \.yaml, \.yml or \.toml, got"):
        optstrat.dump(optstrat.Constant(value=1.0), tmp_path / "policy.ini")


@pytest.mark.parametrize(
    ("suffix", "text"),
    [(".json", "{not json"), (".yaml", "kind: [unclosed"), (".toml", "kind = ")],
)
def test_malformed_file_raises_value_error(suffix, text, tmp_path):
    path = tmp_path / f"policy{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError):
        optstrat.load(path)


def test_spec_repeated_argument_raises():
    with pytest.raises(ValueError, match="cosine_decay got the argument 'init_value' twice"):
        optstrat.from_spec("cosine_decay(init_value=1.0, decay_steps=10, init_value=2.0)")


def test_spec_call_of_unknown_function_names_it():
    with pytest.raises(ValueError, match="unknown kind '__import__'"):
        optstrat.from_spec("cosine_decay(init_value=__import__('os'), decay_steps=10)")


def test_missing_required_field_is_named():
    with pytest.raises(ValueError, match="kind 'cosine_decay' is missing the required field 'decay_steps'"):
        optstrat.from_spec("cosine_decay(init_value=1.0)")
