"""The run directory ``output/<cfg group>/<cfg name>/<extra_tag>/`` and what is saved into it."""
import json
import os
import subprocess
from pathlib import Path

import yaml


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


def save_resolved_config(cfg, output_dir, run_info, name='config_resolved.yaml'):
    """Write the resolved ``cfg`` (overrides applied) as YAML headed by ``run_info`` comments, plus
    ``run_info.json``. ``run_info`` holds e.g. git SHA, seed, world size and effective batch size."""
    output_dir = Path(output_dir)
    header = ''.join(f'# {k}: {v}\n' for k, v in run_info.items())
    text = header + yaml.safe_dump(to_plain(dict(cfg)), sort_keys=False)
    (output_dir / name).write_text(text, encoding='utf-8')
    (output_dir / 'run_info.json').write_text(json.dumps(to_plain(run_info), indent=2), encoding='utf-8')
    return output_dir / name
