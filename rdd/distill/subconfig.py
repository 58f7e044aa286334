"""Complete ``MODEL.STUDENT`` / ``MODEL.TEACHER`` sub-configs loaded by OpenPCDet's own config loader.

rdd's loader (:mod:`rdd.config`) resolves ``_BASE_CONFIG_`` at every level of every included file and stores the
absolute path. OpenPCDet's ``merge_new_config`` resolves only the bases written in the file being loaded
(relative to the working directory) and copies a base file's content as it is, so inside
``MODEL.STUDENT: {_BASE_CONFIG_: cfgs/rdd/cp_voxel_s.yaml}`` the student file's own ``_BASE_CONFIG_`` (and its
``DATA_CONFIG``'s) stay unresolved, relative strings. :func:`complete_sub_config` detects that (a relative
``_BASE_CONFIG_`` anywhere in the sub-config) and reloads the referenced file with every base resolved: relative
to the working directory first (OpenPCDet's convention), then to the including file, the repository root and
``<root>/configs``. Keys written next to ``_BASE_CONFIG_`` in the KD file are not re-applied in that case.
"""
import os
from pathlib import Path

import yaml
from easydict import EasyDict

from .registry import KDConfigError

BASE_KEY = '_BASE_CONFIG_'


def _has_relative_base(node):
    if not isinstance(node, dict):
        return False
    base = node.get(BASE_KEY)
    if base is not None and not os.path.isabs(str(base)):
        return True
    return any(_has_relative_base(v) for k, v in node.items() if k != BASE_KEY)


def _find(name, including_dir, who):
    from rdd.config import ROOT_DIR
    p = Path(os.path.expanduser(str(name)))
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + ([including_dir / p] if including_dir else []) + [
        Path(ROOT_DIR) / p, Path(ROOT_DIR) / 'configs' / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise KDConfigError(f'{who}: {BASE_KEY} file {name!r} not found (tried {", ".join(map(str, candidates))})')


def _merge(dst, src, src_dir, stack, who):
    if BASE_KEY in src:
        path = _find(src[BASE_KEY], src_dir, who)
        if path in stack:
            raise KDConfigError(f'{who}: {BASE_KEY} cycle through {path}')
        with open(path) as f:
            _merge(dst, yaml.safe_load(f) or {}, path.parent, stack + (path,), who)
        dst[BASE_KEY] = str(path)
    for key, val in src.items():
        if key == BASE_KEY:
            continue
        if isinstance(val, dict):
            if not isinstance(dst.get(key), dict):
                dst[key] = EasyDict()
            _merge(dst[key], val, src_dir, stack, who)
        else:
            dst[key] = val
    return dst


def complete_sub_config(sub, who):
    """Return ``sub`` itself when fully resolved (rdd's loader), else the referenced file reloaded completely."""
    if not _has_relative_base(sub):
        return sub
    if BASE_KEY not in sub:
        raise KDConfigError(f'{who} has unresolved nested {BASE_KEY} entries but no top-level {BASE_KEY}')
    return EasyDict(_merge({}, {BASE_KEY: sub[BASE_KEY]}, None, (), who))
