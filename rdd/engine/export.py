"""Export a distilled student for evaluation in OpenPCDet (and here): a checkpoint and a flattened config.

``export_student(kd_cfg_file, ckpt, out)`` writes

* ``out`` (``.pth``): OpenPCDet's checkpoint format ``{'model_state', 'epoch', 'it', 'version'}`` with the bare
  student keys of a Distiller checkpoint (never the teacher's; the teacher checkpoint is not needed);
* ``out`` with suffix ``.yaml``: the student's whole config, flattened: no ``_BASE_CONFIG_`` anywhere, every
  inherited value written out, ``DATA_CONFIG.DATA_PATH`` (and a relative ``SPLIT_FILE``) made absolute as rdd
  resolves them, rdd's bookkeeping keys (``ROOT_DIR``, ``CFG_FILE``) dropped. OpenPCDet's ``cfg_from_yaml_file``
  therefore reads it from any working directory (it resolves ``_BASE_CONFIG_`` against the working directory
  and only one level deep, so a config with bases would not).

Nothing is written unless the pair fits: the flattened config is read back with rdd's loader (which refuses
width keys that OpenPCDet's class of the same name would ignore, see :mod:`rdd.config_schema`), the student is
built from it and the exported state is loaded **strictly** (every key, every shape). A config that would leave
any tensor of the checkpoint unloaded is an error listing the keys; the files appear only after the check (each
written to a temporary name and renamed).
"""
from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from rdd.config import cfg_from_yaml_file
from rdd.datasets.nuscenes_dataset import resolve_data_path
from rdd.distill import student_state_from_distiller
from rdd.engine.checkpoint_io import save_checkpoint
from rdd.errors import CheckpointError
from rdd.models import build_model
from rdd.models.checkpoint import load_state_dict_strict, read_checkpoint
from rdd.models.registries import OPENPCDET_PLUGIN_NAMES

# rdd's own keys of a loaded config (OpenPCDet's global cfg has its own ROOT_DIR, which a file must not replace)
BOOKKEEPING_KEYS = ('ROOT_DIR', 'CFG_FILE', 'EXP_GROUP_PATH', 'TAG', 'LOCAL_RANK')
BASE_KEY = '_BASE_CONFIG_'


@dataclass
class ExportedStudent:
    """What :func:`export_student` wrote."""
    checkpoint: str
    config: str
    num_keys: int
    needs_plugin: bool  # a module NAME of the config is one only rdd.plugin registers in OpenPCDet


def _plain_without_bases(node):
    if isinstance(node, dict):
        return {k: _plain_without_bases(v) for k, v in node.items() if k != BASE_KEY}
    if isinstance(node, (list, tuple)):
        return [_plain_without_bases(v) for v in node]
    return node


def flat_config_dict(cfg) -> dict:
    """A loaded (base-resolved) config as a plain dict that needs no other file: no ``_BASE_CONFIG_``, no
    bookkeeping keys, ``DATA_CONFIG.DATA_PATH`` / ``SPLIT_FILE`` absolute (resolved as rdd resolves them:
    relative to the repository root)."""

    flat = _plain_without_bases(dict(cfg))
    for key in BOOKKEEPING_KEYS:
        flat.pop(key, None)
    data_cfg = flat.get('DATA_CONFIG', {})
    if data_cfg.get('DATA_PATH'):
        data_cfg['DATA_PATH'] = str(resolve_data_path(data_cfg['DATA_PATH']))
    if data_cfg.get('SPLIT_FILE'):
        data_cfg['SPLIT_FILE'] = str(resolve_data_path(data_cfg['SPLIT_FILE']))
    return flat


def plugin_module_names(model_cfg) -> list:
    """``MODEL`` section NAMEs that OpenPCDet knows only through ``import rdd.plugin``."""
    plugin_names = {name for names in OPENPCDET_PLUGIN_NAMES.values() for name in names}
    names = [model_cfg.get('NAME')] + [sec.get('NAME') for sec in model_cfg.values() if isinstance(sec, dict)]
    return [n for n in names if n in plugin_names]


def _header(source, flat, ckpt_path, cfg_path):
    plugin = plugin_module_names(flat['MODEL'])
    script = 'test_rdd.py' if plugin else 'test.py'
    how = (f"# It names {', '.join(plugin)}, which OpenPCDet knows only after `import rdd.plugin`: run\n"
           "# OpenPCDet's test.py through the plugin wrapper test_rdd.py (docs/openpcdet.md); without the plugin\n"
           "# OpenPCDet refuses the name.\n"
           if plugin else "# It names only OpenPCDet's own classes: OpenPCDet's test.py needs no plugin.\n")
    return (f"# Student config flattened by rdd's tools/export_student.py ({datetime.date.today()}) from\n"
            f"# {source}\n"
            "# No _BASE_CONFIG_: every value is written out, so it loads from any working directory. Checked when\n"
            f"# written: {Path(ckpt_path).name} loads strictly (every key and shape) into the model it builds.\n{how}"
            f"#   cd OpenPCDet/tools && python {script} --cfg_file {cfg_path} --ckpt {ckpt_path}\n"
            "# DATA_CONFIG.DATA_PATH is where rdd reads the data; for another copy add\n"
            "# --set DATA_CONFIG.DATA_PATH DIR.\n")


def _write_temporary(path: Path, text: str) -> str:
    """Write ``text`` to a temporary file beside ``path``; return its path (renamed to ``path`` later)."""
    fd, tmp = tempfile.mkstemp(prefix=f'.tmp_{path.stem}_', suffix=path.suffix, dir=str(path.parent))
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


def _check_pair(cfg_file, state):
    """Build the student from ``cfg_file`` with rdd's loader and load ``state`` strictly (raises on any
    missing, unexpected or mis-shaped key)."""
    model = build_model(cfg_from_yaml_file(cfg_file))
    load_state_dict_strict(model, state, strict=True)


def export_student(kd_cfg_file, ckpt_path, out_path) -> ExportedStudent:
    """Write the student checkpoint ``out_path`` and its flattened config (``out_path`` with suffix ``.yaml``).

    ``kd_cfg_file`` is the distillation config (``MODEL.NAME: Distiller``); its ``MODEL.STUDENT`` is the student's
    whole config. ``ckpt_path`` a Distiller checkpoint. Raises ValueError for a config or checkpoint that is not a
    Distiller's, ConfigError (a ValueError) / CheckpointError when the student config and state do not fit.
    """
    cfg = cfg_from_yaml_file(kd_cfg_file)
    if cfg.MODEL.get('NAME') != 'Distiller':
        raise ValueError(f'{kd_cfg_file}: MODEL.NAME is {cfg.MODEL.get("NAME")!r}, expected a Distiller config')
    ckpt = read_checkpoint(ckpt_path)
    try:
        student_state = student_state_from_distiller(ckpt.get('model_state', ckpt))
    except KeyError as exc:
        raise ValueError(f'{ckpt_path}: {exc.args[0]}') from None
    out_path = Path(out_path).resolve()
    cfg_path = out_path.with_suffix('.yaml')
    if cfg_path == out_path:
        raise ValueError(f'--out {out_path}: give the checkpoint a .pth name (the config goes beside it as .yaml)')
    out_path.parent.mkdir(parents=True, exist_ok=True)
    flat = flat_config_dict(cfg.MODEL.STUDENT)
    source = cfg.MODEL.STUDENT.get(BASE_KEY, f'MODEL.STUDENT of {kd_cfg_file}')
    text = _header(source, flat, out_path, cfg_path) + \
        yaml.safe_dump(flat, sort_keys=False, default_flow_style=None, width=110)
    tmp_cfg = _write_temporary(cfg_path, text)
    try:
        try:
            _check_pair(tmp_cfg, student_state)
        except CheckpointError as exc:
            raise CheckpointError(f'the student of {ckpt_path} does not fit MODEL.STUDENT of {kd_cfg_file} '
                                  f'({source}); nothing was written:\n{exc}') from exc
        save_checkpoint({'model_state': student_state, 'epoch': ckpt.get('epoch', None), 'it': ckpt.get('it', None),
                         'version': ckpt.get('version', None) or 'rdd'}, out_path)
        os.replace(tmp_cfg, cfg_path)
    except BaseException:
        if os.path.exists(tmp_cfg):
            os.remove(tmp_cfg)
        raise
    return ExportedStudent(checkpoint=str(out_path), config=str(cfg_path), num_keys=len(student_state),
                           needs_plugin=bool(plugin_module_names(flat['MODEL'])))
