"""Shared pytest fixtures.

``synth_nusc`` (session scope): a tiny synthetic nuScenes root written once per test session, with its
OpenPCDet info files and GT database. Layout is OpenPCDet's: ``data_path / version`` is the devkit dataroot
(``root``), so a dataset config uses ``DATA_PATH: <data_path>``, ``VERSION: <version>``.
"""
import os
from dataclasses import dataclass, field

import pytest

SYNTH_SCENES = 3  # 2 train + 1 val
SYNTH_SAMPLES_PER_SCENE = 4
SYNTH_SEED = 0
SYNTH_AZIMUTH_RES_DEG = 1.0  # coarse LiDAR (~10k points per sweep) to keep the session fixture fast


@dataclass
class SynthNuScenes:
    """Paths of the session's synthetic nuScenes root (all absolute strings)."""
    data_path: str  # OpenPCDet DATA_PATH
    version: str  # OpenPCDet VERSION ('v1.0-mini')
    root: str  # devkit dataroot = data_path/version; infos and gt database live here
    train_info_path: str
    val_info_path: str
    dbinfos_path: str
    gt_database_dir: str
    split_file: str
    train_scenes: list = field(default_factory=list)
    val_scenes: list = field(default_factory=list)
    seed: int = SYNTH_SEED
    max_sweeps: int = 10
    class_names: tuple = ('car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle',
                          'bicycle', 'pedestrian', 'traffic_cone')


@pytest.fixture(scope='session')
def synth_nusc(tmp_path_factory):
    """Write the tiny synthetic root (3 scenes x 4 key frames, 10 sweeps each) and its infos, once."""
    from rdd.datasets.gt_database import create_groundtruth_database
    from rdd.datasets.nuscenes_infos import create_nuscenes_infos
    from rdd.datasets.synthetic import LidarConfig, write_synthetic_nuscenes

    version = 'v1.0-mini'
    data_path = tmp_path_factory.mktemp('nuscenes')
    root = os.path.join(str(data_path), version)
    out = write_synthetic_nuscenes(root, SYNTH_SCENES, seed=SYNTH_SEED, samples_per_scene=SYNTH_SAMPLES_PER_SCENE,
                                   version=version, lidar=LidarConfig(azimuth_res_deg=SYNTH_AZIMUTH_RES_DEG))
    paths = create_nuscenes_infos(root, version)
    dbinfos = create_groundtruth_database(root, paths['train'])
    return SynthNuScenes(data_path=str(data_path), version=version, root=out.root, train_info_path=paths['train'],
                         val_info_path=paths['val'], dbinfos_path=dbinfos,
                         gt_database_dir=os.path.join(out.root, 'gt_database_10sweeps_withvelo'),
                         split_file=out.split_file, train_scenes=out.train_scenes, val_scenes=out.val_scenes)


@pytest.fixture(scope='session')
def tiny_teacher_ckpt(tmp_path_factory):
    """A random-weight teacher checkpoint (OpenPCDet format) for ``tests/configs/tiny_teacher.yaml``."""
    from test_distill_helpers import write_teacher_ckpt

    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    write_teacher_ckpt(path)
    return path


@pytest.fixture(scope='session')
def shipped_teacher_ckpts(tmp_path_factory):
    """``{resolved teacher config path: random-weight checkpoint}`` for the teachers the shipped KD configs use
    (configs/cp_voxel_01.yaml, cp_voxel_0075.yaml, demo/cp_voxel.yaml), built once per session."""
    from pathlib import Path

    import torch

    from rdd.config import cfg_from_yaml_file
    from rdd.models import build_model
    configs = Path(__file__).resolve().parent.parent / 'configs'
    out = {}
    for name in ('cp_voxel_01.yaml', 'cp_voxel_0075.yaml', 'demo/cp_voxel.yaml'):
        path = tmp_path_factory.mktemp('shipped_teacher') / 'teacher.pth'
        torch.manual_seed(0)
        torch.save({'model_state': build_model(cfg_from_yaml_file(configs / name)).state_dict()}, path)
        out[str((configs / name).resolve())] = path
    return out
