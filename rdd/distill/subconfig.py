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

from rdd.config import BASE_KEY, config_search_dirs, load_base_config, resolve_path
from rdd.errors import ConfigError, KDConfigError


def _has_relative_base(node):
    if not isinstance(node, dict):
        return False
    base = node.get(BASE_KEY)
    if base is not None and not os.path.isabs(str(base)):
        return True
    return any(_has_relative_base(v) for k, v in node.items() if k != BASE_KEY)


def _resolve_cwd_first(name, including_file):
    """OpenPCDet's convention first (relative to the working directory), then rdd's config search dirs."""
    dirs = [Path.cwd()] + config_search_dirs(including_file)
    return resolve_path(name, dirs, f"{BASE_KEY} file '{name}'").resolve()


def complete_sub_config(sub, who):
    """Return ``sub`` itself when fully resolved (rdd's loader), else the referenced file reloaded completely."""
    if not _has_relative_base(sub):
        return sub
    if BASE_KEY not in sub:
        raise KDConfigError(f'{who} has unresolved nested {BASE_KEY} entries but no top-level {BASE_KEY}')
    try:
        return load_base_config(sub[BASE_KEY], resolve=_resolve_cwd_first)
    except ConfigError as err:
        raise KDConfigError(f'{who}: {err}') from None
