"""Which keys each model section may hold, and the check that enforces it.

Contract: ``MODEL_SCHEMAS[name]`` describes the section whose ``NAME`` is ``name`` as a :class:`Section`.
Every key the implementation reads must be listed, and no key it ignores may be: a config key that the code
silently ignores is how "the method is not what the docs say" happens. Sections whose ``NAME`` has no schema
here are validated by their builder (the detector registry raises for unknown names).

A Distiller's ``STUDENT`` and ``TEACHER`` entries are whole configs (loaded with ``_BASE_CONFIG_``); their
``MODEL`` sections are validated recursively. Its ``KD_LOSSES`` entries are validated by the loss registry
when built.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Callable, Dict, Literal, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from rdd.errors import ConfigError

SchemaValue = Union[None, "Section", str]
RefusalHint = Union[str, Callable[[Mapping], str]]


@dataclass
class Section:
    """Allowed keys of a mapping. Values: ``None`` a leaf, a :class:`Section` a nested mapping, ``'module'`` a
    nested module section chosen by its ``NAME``, ``'config'`` a whole nested config, ``'any'`` unchecked.

    ``refused`` maps keys that are refused with a specific explanation (a string, or a function of the section
    returning one) instead of the generic "unknown key" message: a key that OpenPCDet's class of the same name
    would silently ignore, and what to write instead.
    """

    required: Dict[str, SchemaValue] = field(default_factory=dict)
    optional: Dict[str, SchemaValue] = field(default_factory=dict)
    refused: Dict[str, RefusalHint] = field(default_factory=dict)


class _Err(Exception):
    pass


NMS_CONFIG = Section(
    required={"NMS_TYPE": None, "NMS_THRESH": None, "NMS_PRE_MAXSIZE": None, "NMS_POST_MAXSIZE": None})

CENTER_HEAD = Section(
    required={
        "NAME": None, "CLASS_NAMES_EACH_HEAD": None, "SHARED_CONV_CHANNEL": None,
        "SEPARATE_HEAD_CFG": Section(required={"HEAD_ORDER": None, "HEAD_DICT": "any"}),
        "TARGET_ASSIGNER_CONFIG": Section(required={
            "FEATURE_MAP_STRIDE": None, "NUM_MAX_OBJS": None, "GAUSSIAN_OVERLAP": None, "MIN_RADIUS": None}),
        "LOSS_CONFIG": Section(required={"LOSS_WEIGHTS": Section(
            required={"cls_weight": None, "loc_weight": None, "code_weights": None})}),
        "POST_PROCESSING": Section(
            required={"SCORE_THRESH": None, "POST_CENTER_LIMIT_RANGE": None, "MAX_OBJ_PER_SAMPLE": None,
                      "NMS_CONFIG": NMS_CONFIG}),
    },
    optional={"CLASS_AGNOSTIC": None, "USE_BIAS_BEFORE_NORM": None, "NUM_HM_CONV": None, "BN_EPS": None,
              "BN_MOM": None, "INIT_BIAS": None},
)

# OpenPCDet's classes of these names read only the keys listed in their schemas below (pcdet/models/backbones_3d/
# spconv_backbone.py: fixed filters 16-16-32-64-128-128; backbones_2d/base_bev_backbone.py: the five lists). A
# width key on them would build OpenPCDet's full-width module and load only part of a student checkpoint, so it
# is refused here; the plugin's distinct class names carry the widths where OpenPCDet cannot express them.
_UPSTREAM_3D_WIDTH = ("OpenPCDet's VoxelResBackBone8x has fixed filters [16, 16, 32, 64, 128, 128] and ignores "
                      "WIDTH / NUM_FILTERS (it would build the full-width backbone and load the checkpoint only in "
                      "part); name the plugin's class instead: NAME: VoxelResBackBone8xWidth (registered by "
                      "rdd.plugin; it reads WIDTH and NUM_FILTERS)")


def _upstream_bev_width(section: Mapping) -> str:
    width = section.get("WIDTH")
    try:
        explicit = ", ".join(f"{key}: {[int(c * float(width)) for c in section[key]]}"
                             for key in ("NUM_FILTERS", "NUM_UPSAMPLE_FILTERS") if key in section)
    except (TypeError, ValueError):
        explicit = ""
    spelled = f" ({explicit} for WIDTH {width})" if explicit else ""
    return ("OpenPCDet's BaseBEVBackbone ignores WIDTH (it would build the full-width backbone and load the "
            "checkpoint only in part); write the scaled NUM_FILTERS / NUM_UPSAMPLE_FILTERS out" + spelled +
            ", or name the plugin's class BaseBEVBackboneWidth (registered by rdd.plugin; it reads WIDTH)")


_BEV_LISTS = {"LAYER_NUMS": None, "LAYER_STRIDES": None, "NUM_FILTERS": None}

MODEL_SCHEMAS: Dict[str, Section] = {
    "CenterPoint": Section(
        required={"NAME": None, "VFE": "module", "BACKBONE_3D": "module", "MAP_TO_BEV": "module",
                  "BACKBONE_2D": "module", "DENSE_HEAD": "module"},
        optional={"POST_PROCESSING": Section(optional={"RECALL_THRESH_LIST": None, "EVAL_METRIC": None}),
                  "IGNORE_PRETRAIN_MODULES": None},
    ),
    "MeanVFE": Section(required={"NAME": None}),
    "VoxelResBackBone8x": Section(required={"NAME": None},
                                  refused={"WIDTH": _UPSTREAM_3D_WIDTH, "NUM_FILTERS": _UPSTREAM_3D_WIDTH}),
    "VoxelResBackBone8xWidth": Section(required={"NAME": None}, optional={"WIDTH": None, "NUM_FILTERS": None}),
    "HeightCompression": Section(required={"NAME": None, "NUM_BEV_FEATURES": None}),
    "BaseBEVBackbone": Section(
        required={"NAME": None, **_BEV_LISTS}, optional={"UPSAMPLE_STRIDES": None, "NUM_UPSAMPLE_FILTERS": None},
        refused={"WIDTH": _upstream_bev_width}),
    "BaseBEVBackboneWidth": Section(
        required={"NAME": None, **_BEV_LISTS},
        optional={"UPSAMPLE_STRIDES": None, "NUM_UPSAMPLE_FILTERS": None, "WIDTH": None}),
    "CenterHead": CENTER_HEAD,
    "CenterHeadRDD": CENTER_HEAD,
    "Distiller": Section(
        required={"NAME": None, "STUDENT": "config", "TEACHER": "config", "KD_LOSSES": "any"},
        optional={"TEACHER_CKPT": None, "TEACHER_BN": None, "GRID_MISMATCH": None,
                  "LOSS_DET_WEIGHT": None}),
}

TOP_LEVEL = Section(
    required={"CLASS_NAMES": None, "DATA_CONFIG": "any", "MODEL": "module"},
    optional={"OPTIMIZATION": "any", "ROOT_DIR": None, "CFG_FILE": None, "_BASE_CONFIG_": None},
)


def _check(node: Mapping, schema: Section, path: str, origin: Mapping[str, Path], default_file: Path) -> None:
    if not isinstance(node, Mapping):
        raise _Err(f"'{path.rstrip('.')}' must be a mapping, got {type(node).__name__}", path.rstrip("."))
    allowed = {**schema.required, **schema.optional}
    for key in node:
        if key == "_BASE_CONFIG_":
            continue
        if key in schema.refused:
            raise _Err(f"key '{path}{key}' is refused here: {refusal_hint(schema.refused[key], node)}",
                       f"{path}{key}")
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise _Err(f"unknown key '{path}{key}' (allowed here: {hint})", f"{path}{key}")
    for key in schema.required:
        if key not in node:
            raise _Err(f"missing required key '{path}{key}'", path.rstrip(".") or key)
    for key, sub in allowed.items():
        if key not in node or sub is None or sub == "any":
            continue
        val, sub_path = node[key], f"{path}{key}."
        if sub == "module":
            name = val.get("NAME") if isinstance(val, Mapping) else None
            if name in MODEL_SCHEMAS:
                _check(val, MODEL_SCHEMAS[name], sub_path, origin, default_file)
            elif not isinstance(val, Mapping) or "NAME" not in val:
                raise _Err(f"section '{path}{key}' needs a NAME", f"{path}{key}")
        elif sub == "config":
            _check(val, TOP_LEVEL, sub_path, origin, default_file)
        else:
            _check(val, sub, sub_path, origin, default_file)


def refusal_hint(hint: RefusalHint, section: Mapping) -> str:
    """The explanation of a refused key (``hint`` a string or a function of the section)."""
    return hint(section) if callable(hint) else hint


def reject_refused_keys(name: str, section: Mapping, where: str) -> None:
    """Raise :class:`rdd.errors.ConfigError` when ``section`` (a module section whose class is registered as
    ``name``, at config path ``where``) holds a key that ``MODEL_SCHEMAS[name]`` refuses. For modules built from
    a config that did not go through :func:`validate_config` (e.g. assembled in Python)."""
    schema = MODEL_SCHEMAS.get(name)
    for key in (schema.refused if schema is not None else {}):
        if key in section:
            raise ConfigError(f"key '{where}.{key}' is refused for NAME {name}: "
                              f"{refusal_hint(schema.refused[key], section)}")


def validate_config(cfg: Mapping, origin: Optional[Mapping[str, Path]] = None, cfg_file: Optional[Path] = None):
    """Validate a loaded config; raise :class:`rdd.errors.ConfigError` naming the key and its file."""
    origin = origin or {}
    try:
        _check(cfg, TOP_LEVEL, "", origin, cfg_file)
    except _Err as err:
        message, key = err.args
        src = origin.get(key)
        while src is None and "." in key:
            key = key.rsplit(".", 1)[0]
            src = origin.get(key)
        src = src or cfg_file
        raise ConfigError(f"{src}: {message}") from None


# ---------------------------------------------------------------------------------------------------------------
# Typed sections: a frozen dataclass is the schema and the validated value object of a config mapping.

def _type_name(tp) -> str:
    return getattr(tp, '__name__', None) or str(tp).replace('typing.', '')


def _coerce_typed(value, tp, where):
    """``value`` checked against the annotation ``tp`` (int, float, bool, str, Literal, Optional, Tuple[X, ...],
    a nested dataclass); ints are accepted for float fields; ConfigError naming ``where`` otherwise."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce_typed(value, inner[0], where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f'{where}: {value!r} is not one of {list(args)}')
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{where}: expected a list, got {type(value).__name__} {value!r}')
        elem = args[0] if args else None
        if elem is None:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            return tuple(_coerce_typed(v, elem, f'{where}[{i}]') for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f'{where}: expected {len(args)} values, got {len(value)} ({list(value)})')
        return tuple(_coerce_typed(v, a, f'{where}[{i}]') for i, (v, a) in enumerate(zip(value, args)))
    if is_dataclass(tp):
        return parse_section(tp, value, where)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{where}: expected a number, got {type(value).__name__} {value!r}')
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{where}: expected an integer, got {type(value).__name__} {value!r}')
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ConfigError(f'{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}')
        return value
    return value  # Any / unannotated


def parse_section(cls, mapping, where, ignore=()):
    """Build the frozen dataclass ``cls`` from a config mapping whose keys are the field names in UPPER case
    (without a trailing ``_``: a field ``lambda_`` is the key ``LAMBDA``, the PEP 8 spelling of a keyword).

    Every key must be a field (keys in ``ignore`` are skipped, e.g. ``NAME``/``WEIGHT`` that the caller
    consumes); values are type-checked against the annotations; missing keys take the field defaults; a field
    without default is required. ``cls.__post_init__`` may raise ValueError for range checks. Any problem is a
    :class:`ConfigError` naming ``where.KEY`` (``where`` e.g. ``'MODEL.KD_LOSSES[0] (RDDLoss)'``).
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f'{where}: expected a mapping, got {type(mapping).__name__} {mapping!r}')
    hints = get_type_hints(cls)
    by_key = {_config_key(f.name): f for f in fields(cls) if f.init}
    unknown = sorted(k for k in mapping if k not in by_key and k not in ignore and k != '_BASE_CONFIG_')
    if unknown:
        raise ConfigError(f'{where}: unknown key(s) {unknown} (allowed: {sorted(by_key)})')
    kwargs = {}
    for key, f in by_key.items():
        if key in mapping:
            kwargs[f.name] = _coerce_typed(mapping[key], hints[f.name], f'{where}.{key}')
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f'{where}: missing required key {key}')
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f'{where}: {err}') from None


def section_to_mapping(obj) -> dict:
    """Inverse of :func:`parse_section`: ``{FIELD_NAME_UPPER: value}`` (nested dataclasses as mappings, tuples as
    lists) for dumps and docs."""
    out = {}
    for f in fields(obj):
        val = getattr(obj, f.name)
        if is_dataclass(val):
            val = section_to_mapping(val)
        elif isinstance(val, tuple):
            val = list(val)
        out[_config_key(f.name)] = val
    return out


def _config_key(field_name: str) -> str:
    """Config key of a dataclass field: upper case, a trailing ``_`` (keyword escape) dropped."""
    return field_name.rstrip('_').upper()
