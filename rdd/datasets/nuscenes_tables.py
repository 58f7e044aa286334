"""The nuScenes devkit's JSON tables: loading with errors that name the file.

The devkit's ``NuScenes(version, dataroot)`` reads the 13 tables of ``<dataroot>/<version>/`` with ``json.load``:
a truncated or corrupt table then fails with ``json.decoder.JSONDecodeError: Unterminated string ...`` and no
file name, a missing one with a bare ``FileNotFoundError`` or an ``AssertionError`` deep in the devkit.

* :func:`check_devkit_tables` reads every table (one at a time, so peak memory is one table) and raises
  :class:`DevkitTableError` naming the file for a missing, unreadable, non-JSON or malformed table, or a missing
  map mask (the devkit opens each ``map`` record's PNG). Tools call it before long work that ends in an
  evaluation (``tools/test.py`` before inference), so a bad table is found in seconds, not after hours.
* :func:`load_nuscenes` builds the devkit's ``NuScenes``; when that fails it runs the check to name the file.
"""
from __future__ import annotations

import json
import os

from rdd.errors import DevkitTableError

# the tables NuScenes.__init__ loads, in its order (all must exist; they may be empty lists)
DEVKIT_TABLES = ('category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor', 'ego_pose',
                 'log', 'scene', 'sample', 'sample_data', 'sample_annotation', 'map')


def _read_table(path):
    try:
        with open(path) as f:
            table = json.load(f)
    except FileNotFoundError:
        raise DevkitTableError(f'nuScenes table missing: {path} (the devkit needs all of {", ".join(DEVKIT_TABLES)}; '
                               'an empty table is the list [])') from None
    except OSError as err:
        raise DevkitTableError(f'nuScenes table unreadable: {path}: {err}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DevkitTableError(f'nuScenes table {path} is not valid JSON ({err}): the file is truncated or corrupt; '
                               're-extract it from the dataset archive') from None
    if not isinstance(table, list):
        raise DevkitTableError(f'nuScenes table {path} holds a JSON {type(table).__name__}, expected a list of records')
    for i, rec in enumerate(table):
        if not isinstance(rec, dict) or 'token' not in rec:
            raise DevkitTableError(f'nuScenes table {path}: record {i} is not an object with a "token"')
    return table


def check_devkit_tables(dataroot, version, keep=('scene', 'sample')) -> dict:
    """Check that the devkit can read ``<dataroot>/<version>/``; return ``{table: records}`` for the tables in
    ``keep`` (the others are read and dropped).

    Raises FileNotFoundError naming the folder when it is missing, DevkitTableError naming the file otherwise.
    """
    folder = os.path.join(os.fspath(dataroot), version)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'nuScenes version folder not found: {folder} (the devkit dataroot '
                                f'{os.fspath(dataroot)} must hold {version}/ with the JSON tables)')
    kept = {}
    for name in DEVKIT_TABLES:
        table = _read_table(os.path.join(folder, f'{name}.json'))
        if name == 'map':
            for rec in table:
                mask = os.path.join(os.fspath(dataroot), str(rec.get('filename', '')))
                if not os.path.isfile(mask):
                    raise DevkitTableError(f'nuScenes map mask {mask} (named by {os.path.join(folder, "map.json")}) '
                                           'not found: the devkit opens every map record\'s file')
        if name in keep:
            kept[name] = table
    return kept


def load_nuscenes(dataroot, version, verbose=False):
    """The devkit's ``NuScenes(version, dataroot)``; a failure to load is re-raised as DevkitTableError naming the
    file (or, when every table checks out, the devkit's own error with the dataroot)."""
    from nuscenes.nuscenes import NuScenes
    try:
        return NuScenes(version=version, dataroot=os.fspath(dataroot), verbose=verbose)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        check_devkit_tables(dataroot, version, keep=())
        raise DevkitTableError(f'the nuScenes devkit cannot load {version} at {os.fspath(dataroot)}: '
                               f'{type(exc).__name__}: {exc}') from exc
