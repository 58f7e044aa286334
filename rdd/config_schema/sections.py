"""The one config-validation mechanism: a frozen dataclass is a config section's schema and value object.

``parse_section(cls, mapping, where)`` checks every key of ``mapping`` against the fields of ``cls`` (the config
key of a field is its name in upper case, or ``field(metadata={'key': ...})`` for OpenPCDet's lower-case keys),
type-checks the values against the annotations and builds the frozen ``cls``; ``cls.__post_init__`` checks
ranges and relations. Annotations understood: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Literal``,
``Optional``/``Union`` (first alternative that fits), ``Tuple[X, ...]`` / ``Tuple[X, Y]``, ``Dict[str, X]``, a
nested dataclass, ``Any`` (unchecked) and ``Annotated[Mapping, ByName(table)]`` (a section whose ``NAME`` picks
its dataclass in ``table``). A class attribute ``REFUSED = {KEY: why}`` refuses keys with an explanation (a
string, or a function of the section's mapping returning one).

Every problem is a :class:`rdd.errors.ConfigError` whose ``key`` is the dotted key (``where.KEY``), so that the
loader (:mod:`rdd.config_schema.validate`) can name the file that set it.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Annotated, Any, Dict, Literal, Mapping, Union, get_args, get_origin, get_type_hints

from rdd.errors import ConfigError

__all__ = ['ByName', 'parse_section', 'section_to_mapping', 'coerce', 'config_key', 'key_field', 'join_key',
           'reject_refused_keys']


@dataclass(frozen=True)
class ByName:
    """``Annotated[Mapping, ByName(table)]``: a mapping whose ``NAME`` selects its dataclass in ``table``
    (``{name: dataclass}``; the ``NAME`` key itself is not a field). A name missing from ``table`` is an error
    (``unknown='error'``) or left unchecked (``unknown='pass'``: sections whose classes may be registered by code
    that is not loaded here, e.g. the OpenPCDet plugin's names)."""
    table: Dict[str, type]
    unknown: str = 'error'


def join_key(where: str, key: str) -> str:
    """``'A.B' + 'C'`` -> ``'A.B.C'``; an empty ``where`` gives ``key``."""
    return f'{where}.{key}' if where else key


def config_key(f) -> str:
    """The config key of dataclass field ``f``: ``metadata['key']``, else the name in upper case without a
    trailing ``_`` (a field ``lambda_``, the PEP 8 spelling of a keyword, is the key ``LAMBDA``)."""
    return f.metadata.get('key', f.name.rstrip('_').upper())


def _label(where):
    return where or 'config (top level)'


def _fail(where, message):
    raise ConfigError(f'{_label(where)}: {message}', key=where)


def _number(value, tp, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and isinstance(value, float)):
        hint = ''
        if isinstance(value, str) and tp is float:
            hint = ' (YAML reads 1e-3 without a dot as a string: write 1.0e-3)'
        what = 'an integer' if tp is int else 'a number'
        _fail(where, f'expected {what}, got {type(value).__name__} {value!r}{hint}')
    return tp(value) if tp is float else value


def _by_name(value, marker, where):
    if not isinstance(value, Mapping) or 'NAME' not in value:
        _fail(where, f'expected a mapping with a NAME, got {value!r}')
    name = value['NAME']
    if name not in marker.table:
        if marker.unknown == 'pass':
            return value
        _fail(join_key(where, 'NAME'), f'unknown NAME {name!r}; known: {sorted(marker.table)}')
    return parse_section(marker.table[name], value, where, ignore=('NAME',))


def _sequence(value, args, where):
    if not isinstance(value, (list, tuple)):
        _fail(where, f'expected a list, got {type(value).__name__} {value!r}')
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        elem = args[0] if args else Any
        return tuple(coerce(v, elem, f'{where}[{i}]') for i, v in enumerate(value))
    if len(value) != len(args):
        _fail(where, f'expected {len(args)} values, got {len(value)} ({list(value)})')
    return tuple(coerce(v, a, f'{where}[{i}]') for i, (v, a) in enumerate(zip(value, args)))


def _union(value, args, where):
    if value is None and type(None) in args:
        return None
    first_error = None
    for alternative in (a for a in args if a is not type(None)):
        try:
            return coerce(value, alternative, where)
        except ConfigError as err:
            first_error = first_error or err
    raise first_error


def coerce(value, tp, where):
    """``value`` checked against the annotation ``tp`` (see the module docstring); ConfigError naming ``where``."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        markers = [m for m in tp.__metadata__ if isinstance(m, ByName)]
        return _by_name(value, markers[0], where) if markers else coerce(value, args[0], where)
    if origin is Union:
        return _union(value, args, where)
    if origin is Literal:
        if value not in args:
            _fail(where, f'{value!r} is not one of {list(args)}')
        return value
    if origin in (tuple, list):
        return _sequence(value, args, where)
    if origin in (dict, Mapping) or tp is Mapping:
        if not isinstance(value, Mapping):
            _fail(where, f'expected a mapping, got {type(value).__name__} {value!r}')
        elem = args[1] if args else Any
        return {k: coerce(v, elem, join_key(where, str(k))) for k, v in value.items()}
    if is_dataclass(tp):
        return parse_section(tp, value, where)
    if tp in (int, float):
        return _number(value, tp, where)
    if tp in (bool, str):
        if not isinstance(value, tp):
            _fail(where, f'expected {tp.__name__}, got {type(value).__name__} {value!r}')
        return value
    return value  # Any


def reject_refused_keys(cls, mapping, where):
    """ConfigError for the first key of ``mapping`` that ``cls.REFUSED`` refuses (with its explanation). Also
    called by modules built from a config that did not go through :func:`validate_config` (assembled in Python),
    so a refused key can never be ignored silently."""
    refused = getattr(cls, 'REFUSED', {})
    for key in mapping:
        if key in refused:
            why = refused[key](mapping) if callable(refused[key]) else refused[key]
            _fail(join_key(where, key), f'refused: {why}')


def _check_keys(cls, mapping, by_key, where, ignore):
    reject_refused_keys(cls, mapping, where)
    unknown = sorted(k for k in mapping if k not in by_key and k not in ignore and k != '_BASE_CONFIG_')
    if unknown:
        raise ConfigError(f'{_label(where)}: unknown key(s) {unknown} (allowed: {sorted(by_key)})',
                          key=join_key(where, unknown[0]))


def parse_section(cls, mapping, where, ignore=()):
    """Build the frozen dataclass ``cls`` from a config mapping (see the module docstring).

    Every key must be a field (keys in ``ignore`` are skipped, e.g. ``NAME``/``WEIGHT`` that the caller
    consumes); missing keys take the field defaults; a field without default is required. ``cls.__post_init__``
    may raise ValueError, or ConfigError with ``key`` relative to the section. Any problem is a
    :class:`ConfigError` naming ``where.KEY`` (``where`` e.g. ``'DATA_CONFIG'`` or ``'MODEL.KD_LOSSES[0]
    (RDDLoss)'``).
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        _fail(where, f'expected a mapping, got {type(mapping).__name__} {mapping!r}')
    hints = get_type_hints(cls, include_extras=True)
    by_key = {config_key(f): f for f in fields(cls) if f.init}
    _check_keys(cls, mapping, by_key, where, ignore)
    kwargs = {}
    for key, f in by_key.items():
        if key in mapping:
            kwargs[f.name] = coerce(mapping[key], hints[f.name], join_key(where, key))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f'{_label(where)}: missing required key {key}', key=join_key(where, key))
    try:
        return cls(**kwargs)
    except ConfigError as err:  # from __post_init__: its key is relative to this section
        key = join_key(where, err.key) if err.key else where
        related = tuple(join_key(where, k) for k in err.related)
        raise ConfigError(f'{_label(key)}: {err}', key=key, related=related) from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f'{_label(where)}: {err}', key=where) from None


def section_to_mapping(obj) -> dict:
    """Inverse of :func:`parse_section`: ``{config key: value}`` (nested dataclasses as mappings, tuples as
    lists) for dumps and docs."""
    out = {}
    for f in fields(obj):
        val = getattr(obj, f.name)
        if is_dataclass(val):
            val = section_to_mapping(val)
        elif isinstance(val, tuple):
            val = [section_to_mapping(v) if is_dataclass(v) else v for v in val]
        out[config_key(f)] = val
    return out


def key_field(name: str, default=MISSING):
    """A dataclass field whose config key is ``name`` as written (OpenPCDet's lower-case keys)."""
    if default is MISSING:
        return field(metadata={'key': name})
    return field(default=default, metadata={'key': name})
