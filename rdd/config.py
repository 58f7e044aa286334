"""OpenPCDet-schema YAML configs without a global config object.

A config file has the top-level keys ``CLASS_NAMES``, ``DATA_CONFIG``, ``MODEL`` and ``OPTIMIZATION``. Any
mapping may hold ``_BASE_CONFIG_: path``: the referenced file is loaded (recursively) into that mapping first
and the mapping's own keys are merged on top, dicts recursively, lists and scalars replaced whole, as OpenPCDet
does. The path is resolved relative to the including file, then the repository root; absolute paths work too.
The current working directory is never consulted. After resolution ``_BASE_CONFIG_`` holds the absolute path
of the file it named (OpenPCDet keeps the key too), so code can resolve paths relative to a referenced file.

``cfg_from_yaml_file`` adds two top-level keys: ``ROOT_DIR`` (the repository root, as OpenPCDet's global cfg
has) and ``CFG_FILE`` (the absolute path of the loaded file). Model sections are validated against
:mod:`rdd.config_schema` when loaded: an unknown or missing key is a :class:`ConfigError` naming the key and
the file that introduced it.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml
from easydict import EasyDict

from rdd.config_schema import validate_config
from rdd.errors import ConfigError

ROOT_DIR = Path(__file__).resolve().parent.parent
BASE_KEY = "_BASE_CONFIG_"


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, "r") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse YAML in {path}: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def resolve_path(name, search_dirs: Iterable, required: Optional[str] = None) -> Path:
    """The one resolver of paths written in configs and on command lines.

    ``~`` is expanded; an absolute path is returned as it is (normalised). A relative path is tried against each
    of ``search_dirs`` in order and the first that exists wins. When none exists: with ``required`` (what the
    path is, e.g. ``"_BASE_CONFIG_ file 'a.yaml'"``) a :class:`ConfigError` listing the places tried, else the
    first candidate, so that the caller's own error names where the file was expected.
    """
    p = Path(os.path.expanduser(str(name)))
    candidates = [p] if p.is_absolute() else [Path(d) / p for d in search_dirs if d is not None]
    candidates = [Path(os.path.normpath(c)) for c in candidates] or [Path(os.path.normpath(Path.cwd() / p))]
    for c in candidates:
        if c.exists():
            return c
    if required:
        raise ConfigError(f"{required} not found; tried: {', '.join(str(c) for c in candidates)}")
    return candidates[0]


def config_search_dirs(including_file: Optional[Path]) -> List[Path]:
    """Where a relative ``_BASE_CONFIG_`` is looked for: the including file's directory, the repository root and
    ``<root>/configs`` (so OpenPCDet-style ``cfgs/...`` spellings need not be rewritten); never the CWD."""
    dirs = [including_file.parent] if including_file is not None else []
    return dirs + [ROOT_DIR, ROOT_DIR / "configs"]


def resolve_config_path(name: str, including_file: Optional[Path]) -> Path:
    """Absolute path of a ``_BASE_CONFIG_`` (:func:`resolve_path` over :func:`config_search_dirs`)."""
    where = f" (included from {including_file})" if including_file else ""
    return resolve_path(name, config_search_dirs(including_file), f"{BASE_KEY} file '{name}'{where}").resolve()


def _merge(dst: dict, src: dict, src_file: Optional[Path], origin: Dict[str, Path], prefix: str,
           stack: Tuple[Path, ...], resolve=resolve_config_path) -> dict:
    """Merge mapping ``src`` (read from ``src_file``) into ``dst`` in place, resolving bases first with
    ``resolve(name, including_file) -> Path``."""
    if BASE_KEY in src:
        base_path = resolve(str(src[BASE_KEY]), src_file)
        if base_path in stack:
            chain = " -> ".join(str(s) for s in stack + (base_path,))
            raise ConfigError(f"{BASE_KEY} cycle: {chain}")
        _merge(dst, _read_yaml(base_path), base_path, origin, prefix, stack + (base_path,), resolve)
        dst[BASE_KEY] = str(base_path)
    for key, val in src.items():
        if key == BASE_KEY:
            continue
        path = f"{prefix}{key}"
        origin[path] = src_file
        if isinstance(val, dict):
            if not isinstance(dst.get(key), dict):
                dst[key] = {}
            _merge(dst[key], val, src_file, origin, path + ".", stack, resolve)
        else:
            dst[key] = val
    return dst


def load_base_config(name: str, resolve=resolve_config_path) -> EasyDict:
    """Load the file ``name`` (resolved with ``resolve(name, None)``) with every ``_BASE_CONFIG_`` resolved, as
    the mapping ``{_BASE_CONFIG_: name}`` would load; ``_BASE_CONFIG_`` then holds the file's absolute path."""
    return EasyDict(_merge({}, {BASE_KEY: name}, None, {}, "", (), resolve))


def load_config_with_origin(path: str | Path) -> Tuple[EasyDict, Dict[str, Path]]:
    """Load a config file; return ``(cfg, origin)`` where ``origin`` maps dotted key paths to their file."""
    cfg_path = Path(path).expanduser()
    if not cfg_path.is_absolute():
        cfg_path = cfg_path.resolve()
    if not cfg_path.is_file():
        raise ConfigError(f"config file not found: {cfg_path}")
    origin: Dict[str, Path] = {}
    merged = _merge({}, _read_yaml(cfg_path), cfg_path, origin, "", (cfg_path,))
    return EasyDict(merged), origin


def cfg_from_yaml_file(cfg_file: str | Path, config: Optional[dict] = None, validate: bool = True) -> EasyDict:
    """Load ``cfg_file`` (OpenPCDet schema) and merge it into ``config`` (a new EasyDict when None).

    Returns the merged :class:`EasyDict` with ``ROOT_DIR`` and ``CFG_FILE`` set. Raises :class:`ConfigError`
    for a missing file or base, bad YAML, or (``validate``) unknown / missing model keys.
    """
    cfg, origin = load_config_with_origin(cfg_file)
    if validate:
        validate_config(cfg, origin, Path(cfg_file).resolve())
    out = config if config is not None else EasyDict()
    out.update(cfg)
    out.ROOT_DIR = str(ROOT_DIR)
    out.CFG_FILE = str(Path(cfg_file).resolve())
    return out


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(value: Any, old: Any, key: str) -> Any:
    """Convert an override ``value`` to the type of the existing ``old`` value, as OpenPCDet does."""
    if isinstance(old, dict) and isinstance(value, str):
        out = dict(old)
        for item in value.split(","):
            if ":" not in item:
                raise ConfigError(f"--set {key}: expected 'subkey:value,...' for a mapping, got '{value}'")
            sub, sub_val = item.split(":", 1)
            if sub not in old:
                raise ConfigError(f"--set {key}: no key '{sub}' in {sorted(old)}")
            out[sub] = _coerce(_parse_value(sub_val), old[sub], f"{key}.{sub}")
        return EasyDict(out)
    if isinstance(old, list) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        items = str(value).split(",") if isinstance(value, str) else [value]
        elem_type = type(old[0]) if old else str
        return [elem_type(_parse_value(x)) if elem_type is not str else x for x in items]
    if isinstance(old, list) and isinstance(value, tuple):
        return list(value)
    if isinstance(old, bool) or isinstance(value, bool):
        if type(old) is not type(value):
            raise ConfigError(f"--set {key}: type {type(value).__name__} does not match {type(old).__name__}")
        return value
    if isinstance(old, float) and isinstance(value, int):
        return float(value)
    if old is None or value is None or type(old) is type(value):
        return value
    raise ConfigError(f"--set {key}: value {value!r} of type {type(value).__name__} does not match the "
                      f"existing {type(old).__name__} value {old!r}")


def cfg_from_list(cfg_list: List[str], config: dict) -> dict:
    """Apply ``--set`` overrides ``[KEY, VALUE, KEY, VALUE, ...]`` to ``config`` in place.

    ``KEY`` is a dotted path that must already exist; ``VALUE`` is parsed with ``ast.literal_eval`` (falling
    back to the plain string) and coerced to the existing value's type, as OpenPCDet does. Raises
    :class:`ConfigError` naming the key on a missing key, odd-length list or type mismatch.
    """
    if len(cfg_list) % 2 != 0:
        raise ConfigError(f"--set needs KEY VALUE pairs, got an odd number of items: {cfg_list}")
    for key, text in zip(cfg_list[0::2], cfg_list[1::2]):
        node = config
        parts = key.split(".")
        for i, sub in enumerate(parts[:-1]):
            if not isinstance(node, dict) or sub not in node:
                raise ConfigError(f"--set {key}: key '{'.'.join(parts[:i + 1])}' does not exist in the config")
            node = node[sub]
        last = parts[-1]
        if not isinstance(node, dict) or last not in node:
            raise ConfigError(f"--set {key}: key '{key}' does not exist in the config")
        node[last] = _coerce(_parse_value(text), node[last], key)
    return config
