"""The run directory ``output/<cfg group>/<cfg name>/<extra_tag>/`` and what is saved into it."""
import json
import os
import subprocess
from pathlib import Path

import yaml

from rdd.errors import ConfigDriftError

RESOLVED_CONFIG_NAME = 'config_resolved.yaml'
DRIFT_RUN_INFO_KEYS = ('epochs', 'effective_batch_size', 'seed')  # run_info entries that change the training
DRIFT_IGNORED_KEYS = ('ROOT_DIR',)  # where the checkout lies does not change the run


def exp_group_and_tag(cfg_file, root_dir=None):
    """``(group, tag)`` for a config path: ``configs/demo/cp_voxel.yaml`` -> ``('demo', 'cp_voxel')``.

    The group is the config's folder relative to ``<root_dir>/configs`` when it lies there; for other files
    in the repository, as in OpenPCDet, the repository-relative folders without the first one
    (``tests/configs/x.yaml`` -> ``configs``); for files elsewhere, the name of their folder.
    """
    path = Path(cfg_file)
    tag = path.stem
    if root_dir is not None:
        root = Path(root_dir).resolve()
        parent = path.resolve().parent
        for base, drop in ((root / 'configs', 0), (root, 1)):
            try:
                parts = parent.relative_to(base).parts[drop:]
                return '/'.join(parts), tag
            except ValueError:
                continue
        return parent.name, tag
    parts = Path(os.path.normpath(cfg_file)).parts[1:-1]
    return '/'.join(p for p in parts if p not in ('..', '/')), tag


class RunDir:
    """Paths of one run; nothing is created until :meth:`create`."""

    def __init__(self, output_root, group, tag, extra_tag='default'):
        self.output_dir = Path(output_root) / group / tag / extra_tag
        self.ckpt_dir = self.output_dir / 'ckpt'
        self.tb_dir = self.output_dir / 'tensorboard'
        self.eval_dir = self.output_dir / 'eval'

    def create(self):
        for d in (self.output_dir, self.ckpt_dir, self.tb_dir, self.eval_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self


def git_sha(repo_dir):
    """The HEAD commit of ``repo_dir`` (``'+dirty'`` appended when the tree has changes), or ``'unknown'``."""
    try:
        sha = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo_dir, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return 'unknown'
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=repo_dir,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ('+dirty' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def to_plain(obj):
    """EasyDict / Path / tuple tree -> plain dicts, lists, str (YAML/JSON-safe)."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, 'item') and callable(obj.item) and getattr(obj, 'ndim', 1) == 0:
        return obj.item()
    return obj


def save_resolved_config(cfg, output_dir, run_info, name=RESOLVED_CONFIG_NAME):
    """Write the resolved ``cfg`` (overrides applied) as YAML headed by ``run_info`` comments, plus
    ``run_info.json``. ``run_info`` holds e.g. git SHA, seed, world size and effective batch size."""
    output_dir = Path(output_dir)
    header = ''.join(f'# {k}: {v}\n' for k, v in run_info.items())
    text = header + yaml.safe_dump(to_plain(dict(cfg)), sort_keys=False)
    (output_dir / name).write_text(text, encoding='utf-8')
    (output_dir / 'run_info.json').write_text(json.dumps(to_plain(run_info), indent=2), encoding='utf-8')
    return output_dir / name


def _differences(saved, current, prefix=''):
    """Dotted keys whose values differ between two plain trees (a key on one side only counts)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in list(saved) + [k for k in current if k not in saved]:
            sub = f'{prefix}.{key}' if prefix else str(key)
            out += _differences(saved.get(key), current.get(key), sub) if key in saved and key in current \
                else [sub]
        return out
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        return [k for i, (a, b) in enumerate(zip(saved, current)) for k in _differences(a, b, f'{prefix}[{i}]')]
    return [] if saved == current else [prefix]


def _shown(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def check_config_drift(cfg, output_dir, run_info):
    """ConfigDriftError when ``output_dir`` holds a resolved config (and run info) from an earlier run that
    differs from this one's ``cfg`` / ``run_info`` (:data:`DRIFT_RUN_INFO_KEYS`: epochs, effective batch size,
    seed); the message lists the differing keys with both values. Nothing to compare (a new run dir): no error."""
    output_dir = Path(output_dir)
    saved_cfg = output_dir / RESOLVED_CONFIG_NAME
    if not saved_cfg.is_file():
        return
    saved = yaml.safe_load(saved_cfg.read_text(encoding='utf-8')) or {}
    current = yaml.safe_load(yaml.safe_dump(to_plain(dict(cfg)), sort_keys=False))
    for tree in (saved, current):
        for key in DRIFT_IGNORED_KEYS:
            tree.pop(key, None)
    pairs = [(key, _get(saved, key), _get(current, key)) for key in _differences(saved, current)]
    info_file = output_dir / 'run_info.json'
    if info_file.is_file():
        old_info = json.loads(info_file.read_text(encoding='utf-8'))
        pairs += [(f'run_info.{k}', old_info.get(k), to_plain(run_info.get(k))) for k in DRIFT_RUN_INFO_KEYS
                  if k in old_info and old_info.get(k) != to_plain(run_info.get(k))]
    if pairs:
        listed = '; '.join(f'{k}: {_shown(a)} -> {_shown(b)}' for k, a, b in pairs)
        raise ConfigDriftError(
            f'run dir {output_dir} was made with another config than this command ({len(pairs)} key(s) differ: '
            f'{listed}); resuming would mix two experiments and overwrite {saved_cfg.name}. Train into a new dir '
            f'with --extra_tag NAME, or delete {output_dir} to start this one afresh', keys=[k for k, _, _ in pairs])


def _get(tree, dotted):
    """The value at a dotted key made by :func:`_differences` (None when absent)."""
    for part in dotted.replace('[', '.[').split('.'):
        if part.startswith('['):
            index = int(part[1:-1])
            tree = tree[index] if isinstance(tree, list) and index < len(tree) else None
        else:
            tree = tree.get(part) if isinstance(tree, dict) else None
    return tree
