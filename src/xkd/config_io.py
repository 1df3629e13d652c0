"""Typed YAML configs: load a file into nested dataclasses, apply ``--set a.b=value`` overrides.

Every key is checked against the dataclass fields and every value against the field's type. An unknown key or a
wrong type raises :class:`ConfigError` naming the dotted key and the file. Values are parsed by YAML rules, never
with ``eval()``. A dataclass may list keys it renamed in a ``RENAMED_KEYS`` class variable (old -> new): an old key
(dotted when it moved into a sub-section) is still read, with a ``FutureWarning`` naming the new one.
"""

from __future__ import annotations

import dataclasses
import types
import warnings
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"  # the recipes of a checkout (pip install -e .)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key and the source."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against type ``tp`` and return it converted (lists to tuples, ints to floats)."""

    def fail(detail: str = "") -> ConfigError:
        return ConfigError(
            f"{source}: key '{key}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__}){detail}"
        )

    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail()
        return _build(tp, value, key, source)
    if origin is Literal:
        if value not in get_args(tp):
            raise fail()
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError:
                continue
        raise fail()
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise fail()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f"; expected {len(args)} items")
        return tuple(_convert(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise fail()
        return [_convert(v, arg, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = get_args(tp)
        if not isinstance(value, dict):
            raise fail()
        return {_convert(k, kt, key, source): _convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    raise fail(f"; unsupported type {tp}")


def _moved(cls: type, data: dict, prefix: str, source: str) -> dict:
    """``data`` with every key that ``cls.RENAMED_KEYS`` lists moved to its new (possibly dotted) place, each with a
    warning naming the new key."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    old_keys = [k for k in data if k in renamed]
    if not old_keys:
        return data
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items() if k not in old_keys}
    where = f"{prefix}." if prefix else ""
    for old in old_keys:
        *parents, leaf = renamed[old].split(".")
        warnings.warn(f"{source}: '{where}{old}' is deprecated; write '{where}{renamed[old]}' (same meaning)",
                      FutureWarning, stacklevel=4)
        node = out
        for part in parents:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        if leaf in node:
            raise ConfigError(f"{source}: '{where}{renamed[old]}' is given twice (once under its deprecated name)")
        node[leaf] = data[old]
    return out


def _current_key(cfg: Any, key: str) -> str:
    """``key`` (dotted) with every renamed part replaced by its new name (with a warning), walking ``cfg``."""
    parts, section = [], cfg
    for part in key.split("."):
        new = getattr(type(section), "RENAMED_KEYS", {}).get(part)
        if new is not None:
            warnings.warn(f"--set: '{'.'.join([*parts, part])}' is deprecated; write "
                          f"'{'.'.join([*parts, new])}' (same meaning)", FutureWarning, stacklevel=3)
        for name in (new or part).split("."):
            parts.append(name)
            section = getattr(section, name, None)
    return ".".join(parts)


def _build(cls: type[T], data: dict, prefix: str, source: str) -> T:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in _moved(cls, data, prefix, source).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key '{key}' (known keys here: {known})")
        kwargs[k] = _convert(v, hints[k], key, source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: section '{prefix or '<root>'}': {err}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value`` and parse ``value`` as YAML (``0.1`` -> float, ``[1,2]`` -> list, ``x`` -> str)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse {raw!r}: {err}") from None
    return key, _yaml_floats(value)


def _yaml_floats(node: Any) -> Any:
    """YAML 1.1 leaves '1e-4' a string; turn number-like strings into floats."""
    if isinstance(node, dict):
        return {k: _yaml_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_yaml_floats(v) for v in node]
    if isinstance(node, str):
        try:
            return float(node) if node.strip() and node.strip()[0] in "+-.0123456789" else node
        except ValueError:
            return node
    return node


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, recursively for nested sections."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_tree(path: Path, seen: tuple[Path, ...]) -> dict:
    """A YAML file as a dict, with its ``base:`` file (relative to it) merged underneath."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' files form a cycle")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    tree = _yaml_floats(loaded)
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: key 'base' expects a file name, got {base!r}")
    return _merge(_read_tree(path.parent / base, (*seen, path.resolve())), tree)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read ``path`` (YAML) into dataclass ``cls``, then apply ``KEY=VALUE`` overrides in order.

    A top-level ``base: OTHER.yaml`` (relative to the file) is read first and the file's keys override it.
    Missing keys take the dataclass defaults. Errors name the key and the file (or ``--set``).
    """
    tree: dict = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        tree = _read_tree(Path(path), seen=())
    cfg = _build(cls, tree, "", source)
    return apply_overrides(cfg, overrides or [], source)


def apply_overrides(cfg: T, overrides: list[str], source: str = "<config>") -> T:
    """A copy of ``cfg`` with ``KEY=VALUE`` overrides applied and the result validated as a whole."""
    if not overrides:
        return cfg
    tree = to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        key = _current_key(cfg, key)
        *parents, leaf = key.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"--set {text}: unknown key '{key}'")
        node[leaf] = value
    label = f"{source} with --set {' '.join(overrides)}"
    return _build(type(cfg), tree, "", label)


def recipe_file(folder: str, name: str | Path) -> Path:
    """A recipe given by path, or by name (``ucf101`` or ``ucf101.yaml``): ``configs/<folder>/`` of this checkout."""
    path = Path(name)
    if not path.is_file() and path.parent == Path("."):
        path = CONFIGS_DIR / folder / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS_DIR / folder).glob("*.yaml"))
        raise FileNotFoundError(f"no recipe {path}" + (f" (recipes here: {', '.join(known)})" if known else
                                "; run from a checkout of xkd (pip install -e .) or give a YAML file"))
    return path


def to_dict(cfg: Any) -> Any:
    """Dataclass tree -> plain dict/list tree (tuples become lists), ready for YAML."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML that :func:`load_config` reads back to an equal object."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def from_dict(cls: type[T], tree: dict, source: str = "<dict>") -> T:
    """Validate a plain dict (e.g. the config stored in a checkpoint) into ``cls``."""
    return _build(cls, _yaml_floats(tree), "", source)


__all__ = [
    "ConfigError",
    "load_config",
    "apply_overrides",
    "dump_config",
    "to_dict",
    "from_dict",
    "parse_override",
    "recipe_file",
]
