"""Errors that name themselves: a bad devkit table names the file (and tools/test.py finds it before inference);
a failed checkpoint write names the path and leaves no temporary file."""
import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from rdd.datasets.nuscenes_infos import create_nuscenes_infos
from rdd.datasets.nuscenes_splits import PartialEvaluationError
from rdd.datasets.nuscenes_tables import DEVKIT_TABLES, DevkitTableError, check_devkit_tables, load_nuscenes
from rdd.datasets.synthetic import LidarConfig, write_synthetic_nuscenes
from rdd.engine import checkpoint_io

REPO = Path(__file__).resolve().parent.parent
VERSION = 'v1.0-mini'


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    """2 scenes x 2 key frames (1 val scene) with infos; copied per test before it is damaged."""
    data_path = tmp_path_factory.mktemp('tables')
    root = data_path / VERSION
    write_synthetic_nuscenes(str(root), 2, seed=3, samples_per_scene=2, version=VERSION,
                             lidar=LidarConfig(azimuth_res_deg=6.0))
    create_nuscenes_infos(str(root), VERSION)
    return root


@pytest.fixture
def root_copy(tiny_root, tmp_path):
    dst = tmp_path / 'data' / VERSION
    shutil.copytree(tiny_root, dst)
    return dst


def _truncate(path, keep=0.6):
    text = path.read_text()
    path.write_text(text[:int(len(text) * keep)])


@pytest.mark.parametrize('table', ['sample_annotation', 'scene', 'map'])
def test_truncated_devkit_table_names_the_file(root_copy, table):
    path = root_copy / VERSION / f'{table}.json'
    _truncate(path)
    with pytest.raises(json.JSONDecodeError):  # what the devkit itself says: no file name
        json.load(open(path))
    for load in (lambda: check_devkit_tables(root_copy, VERSION), lambda: load_nuscenes(root_copy, VERSION),
                 lambda: create_nuscenes_infos(str(root_copy), VERSION)):
        with pytest.raises(DevkitTableError, match=rf'nuScenes table {path} is not valid JSON .*truncated'):
            load()


def test_missing_or_malformed_tables_and_map_masks_name_the_file(root_copy, tiny_root):
    assert len(DEVKIT_TABLES) == 13
    folder = root_copy / VERSION
    (folder / 'visibility.json').rename(folder / 'visibility.bak')
    with pytest.raises(DevkitTableError, match=rf'table missing: {folder / "visibility.json"}'):
        load_nuscenes(root_copy, VERSION)
    (folder / 'visibility.bak').rename(folder / 'visibility.json')
    (folder / 'log.json').write_text('{"token": "x"}')
    with pytest.raises(DevkitTableError, match=rf'{folder / "log.json"} holds a JSON dict, expected a list'):
        check_devkit_tables(root_copy, VERSION)
    (folder / 'log.json').write_text('[{"name": "no token"}]')
    with pytest.raises(DevkitTableError, match=rf'{folder / "log.json"}: record 0 is not an object with a "token"'):
        check_devkit_tables(root_copy, VERSION)
    shutil.copy(tiny_root / VERSION / 'log.json', folder / 'log.json')
    mask = root_copy / json.load(open(folder / 'map.json'))[0]['filename']
    mask.unlink()
    with pytest.raises(DevkitTableError, match=rf'map mask {mask} .*map\.json'):
        check_devkit_tables(root_copy, VERSION)
    with pytest.raises(FileNotFoundError, match=str(root_copy / 'v1.0-trainval')):
        check_devkit_tables(root_copy, 'v1.0-trainval')


def _test_argv(data_path, out, ckpt):
    return ['--cfg', str(REPO / 'tests' / 'configs' / 'tiny_teacher.yaml'), '--ckpt', str(ckpt), '--workers', '0',
            '--batch_size', '1', '--output_root', str(out), '--set', 'DATA_CONFIG.DATA_PATH', str(data_path),
            'DATA_CONFIG.VERSION', VERSION, 'DATA_CONFIG.MAX_SWEEPS', '2']


@pytest.fixture
def no_inference(monkeypatch):
    """Fails the test if tools/test.py starts predicting."""
    from rdd.engine.evaluator import Evaluator

    def predict(*args, **kwargs):
        raise AssertionError('inference started before the inputs of the evaluation were checked')
    monkeypatch.setattr(Evaluator, 'predict', predict)


def test_tools_test_checks_tables_and_infos_before_inference(root_copy, tiny_root, tmp_path, tiny_teacher_ckpt,
                                                            no_inference):
    from rdd.engine.test_pipeline import main as test_main
    table = root_copy / VERSION / 'sample_annotation.json'
    _truncate(table)
    with pytest.raises(DevkitTableError, match=rf'{table} is not valid JSON'):
        test_main(_test_argv(root_copy.parent, tmp_path / 'out', tiny_teacher_ckpt))
    shutil.copy(tiny_root / VERSION / 'sample_annotation.json', table)
    info = root_copy / 'nuscenes_infos_10sweeps_val.pkl'
    infos = pickle.load(open(info, 'rb'))
    pickle.dump(infos[:1], open(info, 'wb'))  # the val scene has 2 key frames; the info file now holds 1
    with pytest.raises(PartialEvaluationError, match=r"val\.pkl'\] cover 1 of the 2 samples"):
        test_main(_test_argv(root_copy.parent, tmp_path / 'out', tiny_teacher_ckpt))


def test_failed_checkpoint_write_names_the_path_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt' / 'checkpoint_epoch_3.pth'
    checkpoint_io.save_checkpoint({'it': 1}, path)

    def full_disk(obj, f, *args, **kwargs):  # what torch says when the disk fills up mid-write
        f.write(b'PK\x03\x04partial')
        raise RuntimeError('[enforce fail at inline_container.cc:603] . unexpected pos 448 vs 342')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(checkpoint_io.CheckpointWriteError, match=rf'cannot write checkpoint {path}: RuntimeError: '
                                                                 r'\[enforce fail'):
        checkpoint_io.save_checkpoint({'it': 2}, path)
    monkeypatch.undo()
    assert os.listdir(path.parent) == ['checkpoint_epoch_3.pth']  # no .tmp_*, the older file intact
    assert torch.load(path, weights_only=True) == {'it': 1}

    def no_space(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', no_space)
    with pytest.raises(checkpoint_io.CheckpointWriteError, match=rf'{path}: OSError: .*No space left on device'):
        checkpoint_io.save_checkpoint({'it': 2}, path)
    monkeypatch.undo()
    assert os.listdir(path.parent) == ['checkpoint_epoch_3.pth']

    (tmp_path / 'not_a_dir').write_text('a file where the checkpoint folder should be')
    blocked = tmp_path / 'not_a_dir' / 'latest_model.pth'
    with pytest.raises(checkpoint_io.CheckpointWriteError, match=rf'cannot write checkpoint {blocked}'):
        checkpoint_io.save_checkpoint({'it': 2}, blocked)
