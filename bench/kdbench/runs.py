"""Run configs, cache keys and availability of the benchmark's cells.

Every run trains one YAML written here (``<out>/configs/<student>/<row>.yaml``): the student config itself (the
student alone) or the student's KD config with the row's ``KD_LOSSES``, both with the benchmark's data path and
(KD) the teacher checkpoint, so a cell can be re-run by hand with ``tools/train.py --cfg`` that file.

Keys: a run (and the teacher) is identified by a hash of its resolved config (paths left out), its epochs and
seed, the data fingerprint and, for a KD run, the teacher's key. A finished run is found again by its key; a
changed row, config, data or teacher gives a new key, so a stale result is never reported as current.
"""
import copy
import hashlib
import json
from pathlib import Path

import yaml

from .data import atomic_write_text

TEACHER_SEED = 666  # tools/train.py --fix_random_seed
VOLATILE_KEYS = {'_BASE_CONFIG_', 'ROOT_DIR', 'CFG_FILE', 'EXP_GROUP_PATH', 'TAG', 'DATA_PATH', 'TEACHER_CKPT'}


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if str(k) not in VOLATILE_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_digest(cfg_path):
    """sha256 hex of the resolved config at ``cfg_path`` without the path-valued keys (``VOLATILE_KEYS``)."""
    from rdd.config import cfg_from_yaml_file
    cfg = cfg_from_yaml_file(str(cfg_path))
    return hashlib.sha256(json.dumps(_plain(dict(cfg)), sort_keys=True, default=str).encode()).hexdigest()


def cache_key(cfg_path, epochs, seed, data_fp, teacher_key=None):
    """12 hex digits: config digest, epochs, seed, data fingerprint and (KD runs) the teacher's key."""
    parts = [config_digest(cfg_path), str(epochs), str(seed), data_fp, teacher_key or '']
    return hashlib.sha256('|'.join(parts).encode()).hexdigest()[:12]


def num_epochs(cfg_path):
    from rdd.config import cfg_from_yaml_file
    return int(cfg_from_yaml_file(str(cfg_path)).OPTIMIZATION.NUM_EPOCHS)


def write_run_config(path, base_cfg, data_path, kd_losses=None, teacher_ckpt=None):
    """Write the YAML a cell trains: ``base_cfg`` with ``DATA_CONFIG.DATA_PATH`` = ``data_path`` and, for a KD
    row, ``MODEL.KD_LOSSES`` = ``kd_losses`` and ``MODEL.TEACHER_CKPT`` = ``teacher_ckpt``. Returns ``path``."""
    doc = {'_BASE_CONFIG_': str(Path(base_cfg).resolve()), 'DATA_CONFIG': {'DATA_PATH': str(data_path)}}
    if kd_losses is not None:
        doc['MODEL'] = {'KD_LOSSES': [copy.deepcopy(dict(e)) for e in kd_losses]}
        if teacher_ckpt is not None:
            doc['MODEL']['TEACHER_CKPT'] = str(teacher_ckpt)
    header = '# written by bench/kd_benchmark.py (configs/bench/benchmark.yaml); train it by hand with\n' \
             '#   python tools/train.py --cfg <this file> [--teacher_ckpt <teacher checkpoint>]\n'
    atomic_write_text(path, header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return Path(path)


def run_config_path(out_dir, run):
    return Path(out_dir) / 'configs' / run.student.key / f'{run.row.key}.yaml'


def missing_losses(row):
    """The row's KD loss NAMEs that no module has registered (yet)."""
    from rdd.distill.registry import KD_LOSSES
    known = set(KD_LOSSES.names())
    return [name for name in row.loss_names if name not in known]


def write_random_teacher(teacher_cfg, path):
    """A random-weight checkpoint of the teacher (for checking KD configs before the teacher is trained)."""
    from rdd.config import cfg_from_yaml_file
    from rdd.engine.checkpoint_io import checkpoint_state, save_checkpoint
    from rdd.models import build_model
    return save_checkpoint(checkpoint_state(build_model(cfg_from_yaml_file(str(teacher_cfg))), epoch=0, it=0),
                           str(path))


def unavailable_reason(row, cfg_path, teacher_ckpt):
    """None when the row's config builds (a Distiller with every KD loss), else why not: the missing loss NAMEs
    or the error the build raised (e.g. a key the registered loss does not accept)."""
    missing = missing_losses(row)
    if missing:
        return f'KD loss {", ".join(missing)} is not registered'
    if row.kd_losses is None:
        return None
    from rdd.engine.cli import load_config
    from rdd.models import build_model
    try:
        build_model(load_config(str(cfg_path), teacher_ckpt=str(teacher_ckpt)))
    except Exception as exc:  # any build error makes the row unavailable; the message says which
        return f'{type(exc).__name__}: {exc}'
    return None
