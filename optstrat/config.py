"""Registry of kinds, config dicts, spec strings and config files.

Every schedule and clipper registers its ``kind`` name here. A config is
a plain dict of JSON types, ``{"kind": "cosine_decay", "init_value": 0.1, ...}``,
with nested schedules as nested dicts. A spec string is the same written as a
call, ``cosine_decay(init_value=0.1, decay_steps=1000)``; it is parsed as
literals only and never evaluated.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = [
    "dump",
    "from_config",
    "from_spec",
    "kinds",
    "load",
    "register",
    "to_spec",
]

_REGISTRY: dict[str, type] = {}
_T = TypeVar("_T", bound=type)


def register(kind: str) -> Callable[[_T], _T]:
    """Register a frozen dataclass under ``kind`` for ``from_config`` and ``from_spec``."""

    def decorate(cls: _T) -> _T:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"kind {kind!r} is already registered to {_REGISTRY[kind].__name__}")
        cls.kind = kind  # type: ignore[attr-defined]
        _REGISTRY[kind] = cls
        return cls

    return decorate


def kinds(base: type | None = None) -> dict[str, type]:
    """Return the registered kinds, optionally only the subclasses of ``base``, sorted by name."""
    _load_builtin_kinds()
    return {
        name: cls
        for name, cls in sorted(_REGISTRY.items())
        if base is None or issubclass(cls, base)
    }


def encode(value: Any) -> Any:
    """Convert a field value into JSON types: nested kinds become config dicts, tuples lists."""
    if hasattr(value, "to_config"):
        return value.to_config()
    if isinstance(value, (tuple, list)):
        return [encode(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): encode(item) for key, item in value.items()}
    return value


def to_config(obj: Any) -> dict[str, Any]:
    """Return the config dict of a registered dataclass, every field written out."""
    config: dict[str, Any] = {"kind": type(obj).kind}
    for field in dataclasses.fields(obj):
        if field.init:
            config[field.name] = encode(getattr(obj, field.name))
    return config


def from_config(config: Mapping[str, Any]) -> Any:
    """Build a schedule or clipper from its config dict.

    Omitted fields take their defaults. An unknown kind or field raises
    ValueError listing the valid names and the closest match.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict with a 'kind' key, got {config!r} ({type(config).__name__})")
    if "kind" not in config:
        raise ValueError(f"config must have a 'kind' key, got keys {sorted(config)!r}")
    cls = _lookup(config["kind"])
    fields = [field for field in dataclasses.fields(cls) if field.init]
    names = [field.name for field in fields]
    arguments = {}
    for key, value in config.items():
        if key == "kind":
            continue
        if key not in names:
            raise ValueError(_unknown_field_message(cls.kind, key, names))
        arguments[key] = _decode(value)
    required = [
        field.name
        for field in fields
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in arguments]
    if missing:
        raise ValueError(
            f"kind {cls.kind!r} is missing the required field {missing[0]!r}; "
            f"required fields: {', '.join(required)}"
        )
    return cls(**arguments)


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping) and "kind" in value:
        return from_config(value)
    if isinstance(value, list):
        return tuple(_decode(item) for item in value)
    return value


def _lookup(kind: Any) -> type:
    _load_builtin_kinds()
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a string, got {kind!r} ({type(kind).__name__})")
    if kind not in _REGISTRY:
        closest = difflib.get_close_matches(kind, sorted(_REGISTRY), n=1)
        hint = f" Did you mean {closest[0]!r}?" if closest else ""
        raise ValueError(f"unknown kind {kind!r}.{hint} Valid kinds: {_valid_kinds()}")
    return _REGISTRY[kind]


def _valid_kinds() -> str:
    """List the registered kinds grouped as schedules, clippers and others."""
    from optstrat.clipping import Clipper
    from optstrat.schedules import Schedule

    groups: dict[str, list[str]] = {"schedules": [], "clippers": [], "others": []}
    for name, cls in sorted(_REGISTRY.items()):
        if issubclass(cls, Schedule):
            groups["schedules"].append(name)
        elif issubclass(cls, Clipper):
            groups["clippers"].append(name)
        else:
            groups["others"].append(name)
    return "; ".join(f"{group}: {', '.join(names)}" for group, names in groups.items() if names)


def _unknown_field_message(kind: str, key: str, names: list[str]) -> str:
    closest = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean {closest[0]!r}?" if closest else ""
    return f"unknown field {key!r} for kind {kind!r}.{hint} Valid fields: {', '.join(names)}"


# Spec strings ------------------------------------------------------------------------------------


def from_spec(spec: str) -> Any:
    """Build a schedule or clipper from a spec string such as ``constant(value=0.1)``.

    The string must be one call of a registered kind with keyword arguments
    whose values are literals (numbers, strings, True, False, None, lists) or
    nested calls of kinds. Anything else raises ValueError; nothing is evaluated.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string, got {spec!r} ({type(spec).__name__})")
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as error:
        raise ValueError(f"invalid spec {spec!r}: {error.msg}") from None
    return from_config(_spec_node_to_config(tree.body, spec))


def to_spec(obj: Any) -> str:
    """Return the spec string of a schedule or clipper; ``from_spec`` rebuilds it."""
    return _config_to_spec(obj.to_config())


def _config_to_spec(config: Mapping[str, Any]) -> str:
    arguments = ", ".join(f"{key}={_value_to_spec(value)}" for key, value in config.items() if key != "kind")
    return f"{config['kind']}({arguments})"


def _value_to_spec(value: Any) -> str:
    if isinstance(value, Mapping) and "kind" in value:
        return _config_to_spec(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_to_spec(item) for item in value) + "]"
    return repr(value)


def _spec_node_to_config(node: ast.AST, spec: str) -> dict[str, Any]:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"invalid spec {spec!r}: expected a call such as constant(value=0.1), got {ast.unparse(node)!r}")
    _lookup(node.func.id)
    if node.args:
        raise ValueError(
            f"invalid spec {spec!r}: arguments of {node.func.id} must be given by name, "
            f"got positional {ast.unparse(node.args[0])!r}"
        )
    config: dict[str, Any] = {"kind": node.func.id}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise ValueError(f"invalid spec {spec!r}: '**' arguments are not allowed")
        if keyword.arg in config:
            raise ValueError(f"invalid spec {spec!r}: {node.func.id} got the argument {keyword.arg!r} twice")
        config[keyword.arg] = _spec_value(keyword.value, spec)
    return config


def _spec_value(node: ast.AST, spec: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _spec_value(node.operand, spec)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_spec_value(item, spec) for item in node.elts]
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return math.inf if node.id == "inf" else math.nan
    if isinstance(node, ast.Call):
        return _spec_node_to_config(node, spec)
    raise ValueError(f"invalid spec {spec!r}: {ast.unparse(node)!r} is not a literal or a call of a kind")


# Files -------------------------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> Any:
    """Build a schedule or clipper from a JSON, YAML or TOML file, chosen by its suffix."""
    text = os.fspath(path)
    suffix = os.path.splitext(text)[1].lower()
    with open(text, "rb") as file:
        data = file.read()
    if suffix == ".json":
        config = json.loads(data)
    elif suffix in (".yaml", ".yml"):
        yaml = _yaml()
        try:
            config = yaml.safe_load(data)
        except yaml.YAMLError as error:
            raise ValueError(f"invalid YAML in {text!r}: {error}") from None
    elif suffix == ".toml":
        import tomllib

        config = tomllib.loads(data.decode("utf-8"))
    else:
        raise ValueError(f"config file must end in .json, .yaml, .yml or .toml, got {text!r}")
    return from_config(config)


def dump(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write the config of ``obj`` to a JSON, YAML or TOML file, chosen by its suffix."""
    text = os.fspath(path)
    suffix = os.path.splitext(text)[1].lower()
    config = obj.to_config()
    if suffix == ".json":
        payload = json.dumps(config, indent=2) + "\n"
    elif suffix in (".yaml", ".yml"):
        payload = _yaml().safe_dump(config, sort_keys=False)
    elif suffix == ".toml":
        payload = _toml_dumps(config)
    else:
        raise ValueError(f"config file must end in .json, .yaml, .yml or .toml, got {text!r}")
    with open(text, "w", encoding="utf-8") as file:
        file.write(payload)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ImportError("YAML config files need PyYAML: pip install pyyaml") from None
    return yaml


def _toml_dumps(config: Mapping[str, Any]) -> str:
    try:
        import tomli_w
    except ImportError:
        raise ImportError("writing TOML config files needs tomli-w: pip install tomli-w") from None
    return tomli_w.dumps(_drop_none(config))


def _drop_none(value: Any) -> Any:
    # TOML has no null, so a field left at None is omitted and takes its default when read back.
    if isinstance(value, Mapping):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_none(item) for item in value]
    return value


def _load_builtin_kinds() -> None:
    # The kinds register themselves when their modules are imported.
    import optstrat.clipping  # noqa: F401
    import optstrat.schedules  # noqa: F401
