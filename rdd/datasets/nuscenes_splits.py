"""Which scenes form the train / val split of a nuScenes-format dataroot (info creation and evaluation).

One rule, as OpenPCDet and the devkit apply it:

* an **official version name** (``v1.0-trainval``, ``v1.0-mini``, ``v1.0-test``) uses the devkit's official split
  (``nuscenes/utils/splits.py``: train / val, mini_train / mini_val, test), restricted to the scenes the dataroot
  holds. A ``splits.json`` in the version folder is ignored (logged): OpenPCDet's ``create_data.py`` never reads
  it, and another project's root may carry one with other split names;
* a **custom version name** uses a custom split file in the devkit's format (``{split name: [scene names]}``, any
  split names, as ``nuscenes.utils.splits.get_scenes_of_custom_split`` reads it): ``<dataroot>/<version>/
  splits.json`` (where the devkit looks), which must exist;
* an explicit split file (``tools/create_data.py --split_file``, ``DATA_CONFIG.SPLIT_FILE``) is used with any
  version. Which of its splits are train and val is given by name (``--train_split`` / ``--val_split``, default
  ``train`` / ``val``; evaluation: ``DATA_CONFIG.DATA_SPLIT``).

The synthetic generator (``rdd.datasets.synthetic``) names its scenes from the devkit's official lists for the
official version names, so the official split selects exactly its train / val scenes (and OpenPCDet's own tools
read the root unchanged); for other version names it writes ``scene-synth-XXXX`` names and the ``splits.json``
that those need.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

from rdd.errors import PartialEvaluationError

logger = logging.getLogger(__name__)

# version -> (train split, val split) of the devkit's splits.py; v1.0-test has no val split
OFFICIAL_SPLITS = {'v1.0-trainval': ('train', 'val'), 'v1.0-mini': ('mini_train', 'mini_val'),
                   'v1.0-test': ('test', None)}
CUSTOM_SPLIT_NAME = 'splits.json'


@dataclass
class SceneSplit:
    """Scene names of the train and val splits and a description of where they came from (for logs/errors)."""
    train: List[str] = field(default_factory=list)
    val: List[str] = field(default_factory=list)
    source: str = ''


def default_custom_split_path(dataroot: str, version: str) -> str:
    """Where the devkit looks for a custom split: ``<dataroot>/<version>/splits.json``."""
    return os.path.join(os.fspath(dataroot), version, CUSTOM_SPLIT_NAME)


def split_file_for(dataroot: str, version: str, split_file: Optional[str] = None) -> Optional[str]:
    """The custom split file that applies to ``version`` (None: the devkit's official split).

    ``split_file`` if given (must exist); else None for an official version (a ``splits.json`` in its folder is
    logged as ignored); else ``<dataroot>/<version>/splits.json``, which must exist.
    """
    default = default_custom_split_path(dataroot, version)
    if split_file is not None:
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f'split file not found: {split_file}')
        return os.fspath(split_file)
    if version in OFFICIAL_SPLITS:
        if os.path.isfile(default):
            logger.info('%s is an official nuScenes version: using the devkit\'s official split and ignoring %s '
                        '(as OpenPCDet does; pass it explicitly to use it)', version, default)
        return None
    if not os.path.isfile(default):
        raise ValueError(f'version {version!r} is not an official nuScenes version ({sorted(OFFICIAL_SPLITS)}), so '
                         f'it needs a custom split file (devkit format {{"split name": [scene names], ...}}): put one '
                         f'at {default} or pass one explicitly (--split_file / DATA_CONFIG.SPLIT_FILE)')
    return default


def read_custom_splits(split_file: str) -> dict:
    """``{split name: [scene names]}`` of a devkit-format custom split file; errors name the file."""
    try:
        with open(split_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f'split file {split_file} is not valid JSON: {err}') from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                                             for v in data.values()):
        raise ValueError(f'split file {split_file} must hold {{"split name": [scene names], ...}} '
                         '(the devkit\'s custom-split format)')
    return data


def _custom_split(split_file, dataroot, version, scene_names, train_split, val_split):
    splits = read_custom_splits(split_file)
    wanted = [train_split] + ([val_split] if val_split else [])
    missing = [name for name in wanted if name not in splits]
    if missing:
        raise ValueError(f'split file {split_file} has no split {missing[0]!r} (it has {sorted(splits)}); name the '
                         f'train / val splits with --train_split / --val_split')
    train, val = list(splits[train_split]), list(splits[val_split]) if val_split else []
    unknown = sorted(set(train + val) - set(scene_names))
    if unknown:
        raise ValueError(f'split file {split_file} names scenes not in {os.path.join(dataroot, version)}: '
                         f'{unknown[:5]}{" ..." if len(unknown) > 5 else ""}')
    return SceneSplit(train, val, f'split file {split_file} (train: {train_split!r}, val: {val_split!r})')


def resolve_split(dataroot: str, version: str, scene_names, split_file: Optional[str] = None,
                  train_split: Optional[str] = None, val_split: Optional[str] = None) -> SceneSplit:
    """Train / val scene names for info creation (see the module docstring for the rule).

    ``train_split`` / ``val_split`` name splits of a custom split file (default 'train' / 'val'); giving them
    for an official version without an explicit split file is an error (the official split has fixed names).
    An empty train split, or an empty val split outside a test version, is an error naming the source.
    """
    path = split_file_for(dataroot, version, split_file)
    test = version.endswith('test')
    if path is not None:
        split = _custom_split(path, dataroot, version, scene_names, train_split or 'train',
                              None if test and val_split is None else (val_split or 'val'))
    else:
        if train_split is not None or val_split is not None:
            raise ValueError(f'--train_split / --val_split name splits of a custom split file, but {version} uses '
                             f"the devkit's official split; pass --split_file too")
        from nuscenes.utils import splits as devkit_splits
        official = devkit_splits.create_splits_scenes()
        train_name, val_name = OFFICIAL_SPLITS[version]
        available = set(scene_names)  # OpenPCDet keeps the split's scenes that the dataroot holds
        split = SceneSplit([s for s in official[train_name] if s in available],
                           [s for s in official[val_name] if s in available] if val_name else [],
                           f"the devkit's official {version} split ({train_name} / {val_name or '-'}, "
                           'nuscenes/utils/splits.py)')
    if not split.train or (not split.val and not test):
        empty = 'train' if not split.train else 'val'
        raise ValueError(f'empty {empty} split: {split.source} selects no {empty} scene in '
                         f'{os.path.join(dataroot, version)}')
    return split


def split_sample_tokens(nusc, split, split_file=None):
    """``(eval_set_name, sample_tokens, is_custom)`` for the evaluation split ``split``.

    ``nusc``: anything with the devkit's ``version``, ``dataroot``, ``scene`` and ``sample`` records (a
    ``NuScenes``, or the raw tables). With ``split_file`` the scenes come from that custom split file; otherwise
    from the devkit's official splits ('val' / 'train' become 'mini_val' / 'mini_train' on v1.0-mini).
    """
    if split_file is not None:
        splits = read_custom_splits(split_file)
        if split not in splits:
            raise KeyError(f'Split {split!r} not found in split file {split_file} (has {sorted(splits)})')
        scenes, custom = set(splits[split]), True
    else:
        from nuscenes.utils.splits import create_splits_scenes
        if nusc.version.endswith('mini') and split in ('train', 'val'):
            split = 'mini_' + split
        official = create_splits_scenes()
        if split not in official:
            raise KeyError(f'{split!r} is not an official nuScenes split ({sorted(official)}); give SPLIT_FILE')
        scenes, custom = set(official[split]), False
    known = {s['name'] for s in nusc.scene}
    if custom and not scenes <= known:
        raise ValueError(f'Split file {split_file}: scenes {sorted(scenes - known)[:5]} of split {split!r} are not in '
                         f'{nusc.version} at {nusc.dataroot}')
    scene_tokens = {s['token'] for s in nusc.scene if s['name'] in scenes}
    return split, [s['token'] for s in nusc.sample if s['scene_token'] in scene_tokens], custom


def check_split_coverage(covered_tokens, split_tokens, split, what):
    """Raise PartialEvaluationError unless ``covered_tokens`` include every sample token of the split.

    Why refuse rather than score the covered samples with a warning: the devkit scores a split, and a split
    sample without predictions counts as one where every object was missed (measured in issue #11: GT used as
    predictions scored mAP 0.38 instead of 0.90 on a partial info file), while a number computed on the covered
    samples only
    is a number for another, unnamed split that looks comparable with published val results and is not. Both
    are silent failures of a benchmark. The honest ways to evaluate a subset name it: a custom split file
    listing its scenes (``DATA_CONFIG.SPLIT_FILE`` + ``DATA_CONFIG.DATA_SPLIT.test``), so the devkit scores
    exactly those scenes and the result says which split it is.

    Args:
        covered_tokens: sample tokens that have predictions / infos.
        split_tokens: sample tokens of the evaluation split (:func:`split_sample_tokens`).
        split: the split's name, ``what``: what covers it (e.g. 'the info files [...]'), for the message.
    """
    covered = set(covered_tokens)
    missing = [t for t in split_tokens if t not in covered]
    if missing:
        raise PartialEvaluationError(
            f'{what} cover {len(split_tokens) - len(missing)} of the {len(split_tokens)} samples of the evaluation '
            f'split {split!r} ({len(missing)} missing, e.g. sample {missing[0]}). Scoring them would count every '
            'missing sample as one with no detections: the result would be wrong. Create the info file for the '
            'whole split (tools/create_data.py), or evaluate a subset as its own split: a custom split file naming '
            'its scenes, given as DATA_CONFIG.SPLIT_FILE with DATA_CONFIG.DATA_SPLIT.test set to its split name.')
