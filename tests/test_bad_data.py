"""Bad data names itself (issue #11): empty frames, splits without trainable boxes, non-finite points."""
import logging
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rdd.datasets import build_dataloader
from rdd.datasets.dataset_template import EmptySampleError
from rdd.datasets.nuscenes_dataset import NuScenesDataset

from test_dataset_helpers import CLASS_NAMES, make_cfg, make_mini_root


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    data_path, info, db = make_mini_root(tmp_path_factory.mktemp('bad'))
    return SimpleNamespace(data_path=data_path, root=data_path / 'v1.0-mini', infos=pickle.load(open(info, 'rb')))


def _write_infos(mini, name, infos):
    with open(mini.root / name, 'wb') as f:
        pickle.dump(infos, f)
    return name


def _empty_frame_infos(mini):
    """infos[0] with a 0-byte key frame (and no sweeps), then a normal sample."""
    (mini.root / 'samples' / 'LIDAR_TOP' / 'empty.pcd.bin').write_bytes(b'')
    empty = dict(mini.infos[0], lidar_path='samples/LIDAR_TOP/empty.pcd.bin', sweeps=[], token='empty_tok')
    return _write_infos(mini, 'empty_frame.pkl', [empty, mini.infos[1]])


def test_empty_frame_in_evaluation_is_an_error_naming_it(mini):
    cfg = make_cfg(mini.data_path, info_name=_empty_frame_infos(mini), augment=False)
    ds = NuScenesDataset(cfg, CLASS_NAMES, training=False)
    with pytest.raises(EmptySampleError, match=r'frame empty\.pcd .*empty_tok.*no point inside POINT_CLOUD_RANGE'
                                               r'.*empty_frame\.pkl'):
        ds[0]
    assert len(ds[1]['voxels']) > 0


def test_all_points_outside_the_range_is_an_error_in_evaluation(mini):
    cfg = make_cfg(mini.data_path, augment=False)
    cfg.POINT_CLOUD_RANGE = [200.0, 200.0, -5.0, 254.0, 254.0, 3.0]  # no point falls here
    _, dl, _ = build_dataloader(cfg, CLASS_NAMES, batch_size=2, dist=False, workers=0, training=False)
    with pytest.raises(EmptySampleError, match=r'frame sample_0\.pcd .*no point inside POINT_CLOUD_RANGE'):
        next(iter(dl))


def test_empty_frame_in_training_is_skipped_with_a_warning(mini, caplog):
    cfg = make_cfg(mini.data_path, info_name=_empty_frame_infos(mini), gt_sampling=False)
    ds = NuScenesDataset(cfg, CLASS_NAMES, training=True)
    np.random.seed(0)
    with caplog.at_level(logging.WARNING):
        sample = ds[0]
    assert len(sample['voxels']) > 0 and sample['frame_id'] == 'sample_1.pcd'  # the replacement
    assert any('empty.pcd' in r.getMessage() and 'skipped' in r.getMessage() for r in caplog.records)


def test_split_without_trainable_boxes_names_its_info_file(mini):
    """Boxes of CLASS_NAMES exist, but none with a LiDAR point (FILTER_MIN_POINTS_IN_GT drops them all)."""
    zero_pts = [dict(i, num_lidar_pts=np.zeros(len(i['gt_names']), dtype=int)) for i in mini.infos]
    cfg = make_cfg(mini.data_path, info_name=_write_infos(mini, 'zero_pts.pkl', zero_pts), gt_sampling=False)
    with pytest.raises(EmptySampleError, match=r'zero_pts\.pkl.*none of its 6 samples has a box of CLASS_NAMES.*'
                                               r'FILTER_MIN_POINTS_IN_GT=1'):
        NuScenesDataset(cfg, CLASS_NAMES, training=True)
    NuScenesDataset(cfg, CLASS_NAMES, training=False)  # evaluation needs no boxes
    cfg.INFO_PATH = {'train': [_write_infos(mini, 'no_infos.pkl', [])], 'test': ['no_infos.pkl']}
    with pytest.raises(EmptySampleError, match=r'no_infos\.pkl.*none of its 0 samples'):
        NuScenesDataset(cfg, CLASS_NAMES, training=True)


def test_boxes_all_outside_the_range_stop_with_an_error_not_a_recursion_error(mini):
    cfg = make_cfg(mini.data_path, gt_sampling=False)
    cfg.DATA_AUGMENTOR.DISABLE_AUG_LIST = ['random_world_translation']
    cfg.POINT_CLOUD_RANGE = [-54.0, -54.0, 10.0, 54.0, 54.0, 18.0]  # points stay (x, y), every box centre is out
    ds = NuScenesDataset(cfg, CLASS_NAMES, training=True)
    ds.data_processor.data_processor_queue.pop()  # no voxelization: z above every point
    with pytest.raises(EmptySampleError, match=r'infos_train\.pkl.*100 random samples in a row had no box'):
        ds[0]


def test_non_finite_points_are_dropped_and_logged(mini, caplog):
    key = np.fromfile(mini.root / mini.infos[0]['lidar_path'], dtype=np.float32).reshape(-1, 5)
    bad = key.copy()
    bad[3, 0], bad[7, 3], bad[11, 2] = np.nan, np.inf, -np.inf
    bad[12, 4] = np.nan  # the ring column is not used (replaced by the time lag)
    bad.tofile(mini.root / 'samples' / 'LIDAR_TOP' / 'nan.pcd.bin')
    info = dict(mini.infos[0], lidar_path='samples/LIDAR_TOP/nan.pcd.bin', token='nan_tok')
    sweep_pts = np.fromfile(mini.root / info['sweeps'][0]['lidar_path'], dtype=np.float32).reshape(-1, 5)
    sweep_pts[0, 1] = np.nan
    sweep_pts.tofile(mini.root / 'sweeps' / 'LIDAR_TOP' / 'nan_sweep.pcd.bin')
    info['sweeps'] = [dict(info['sweeps'][0], lidar_path='sweeps/LIDAR_TOP/nan_sweep.pcd.bin')]
    cfg = make_cfg(mini.data_path, info_name=_write_infos(mini, 'nan.pkl', [info]), augment=False)
    ds = NuScenesDataset(cfg, CLASS_NAMES, training=False)
    with caplog.at_level(logging.WARNING):
        pts = ds.get_lidar_with_sweeps(0, max_sweeps=2)
    msgs = [r.getMessage() for r in caplog.records]
    assert any('nan.pcd.bin' in m and 'dropped 3 of' in m for m in msgs), msgs
    assert any('nan_sweep.pcd.bin' in m and 'dropped 1 of' in m for m in msgs), msgs
    assert np.isfinite(pts).all()
    is_key = pts[:, 4] == 0
    np.testing.assert_array_equal(pts[is_key, :4], np.delete(key, [3, 7, 11], axis=0)[:, :4])
    assert np.isfinite(ds[0]['voxels']).all()


def test_backbone_given_no_voxels_names_the_frames():
    from rdd.config import cfg_from_yaml_file
    from rdd.models import build_model
    from rdd.config import ROOT_DIR as REPO_ROOT
    model = build_model(cfg_from_yaml_file(REPO_ROOT / 'tests' / 'configs' / 'tiny_teacher.yaml')).eval()
    batch = {'batch_size': 1, 'voxels': torch.zeros((0, 5, 5)), 'voxel_num_points': torch.zeros((0,), dtype=torch.int32),
             'voxel_coords': torch.zeros((0, 4), dtype=torch.int32), 'frame_id': np.array(['lidar_000123'])}
    with torch.no_grad(), pytest.raises(ValueError, match=r'no voxels.*lidar_000123'):
        model(batch)
