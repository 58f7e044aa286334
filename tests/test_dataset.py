"""NuScenesDataset: sweep merging, batch layout, voxel bounds, CBGS, label options, bad input, empty samples."""
import logging
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rdd.datasets import build_dataloader
from rdd.config import ROOT_DIR as REPO_ROOT
from rdd.datasets.nuscenes_dataset import NuScenesDataset, resolve_data_path
from rdd.datasets.processor import Voxelizer, voxelize_batch

from test_dataset_helpers import CLASS_NAMES, NUM_SWEEPS, make_cfg, make_mini_root


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    data_path, info, db = make_mini_root(tmp_path_factory.mktemp('mini'))
    return SimpleNamespace(data_path=data_path, info=info, db=db)


def test_sweep_merge_time_lags_and_frames(mini):
    ds = NuScenesDataset(make_cfg(mini.data_path, augment=False), CLASS_NAMES, training=False)
    key = np.fromfile(mini.data_path / 'v1.0-mini' / ds.infos[0]['lidar_path'], dtype=np.float32).reshape(-1, 5)
    pts = ds.get_lidar_with_sweeps(0, max_sweeps=10)
    assert pts.shape[1] == 5 and pts.dtype == np.float32
    is_key = pts[:, 4] == 0
    np.testing.assert_array_equal(pts[is_key], np.concatenate([key[:, :4], np.zeros((len(key), 1))], 1))
    for j in range(NUM_SWEEPS):
        sel = pts[:, 3] == 100 + j
        assert sel.sum() == 510  # 500 background + 10 object points; the 20 near-sensor points are dropped
        np.testing.assert_allclose(pts[sel, 4], 0.05 * (j + 1), rtol=1e-6)
        # sweep points land back on the key-frame points they were made from
        np.testing.assert_allclose(pts[sel][:500, :3], key[:500, :3] + [0.01 * j, 0, 0], atol=2e-3)
    np.testing.assert_allclose(np.unique(pts[:, 4]), [0.0] + [0.05 * (j + 1) for j in range(NUM_SWEEPS)], rtol=1e-6)
    # padded scene start (OpenPCDet repeats the first sweep): 9 copies of sweep 0
    pts_last = ds.get_lidar_with_sweeps(len(ds) - 1, max_sweeps=10)
    assert (pts_last[:, 3] == 100).sum() == 9 * 510
    # fewer sweeps than available: MAX_SWEEPS - 1 distinct sweeps
    assert len(np.unique(ds.get_lidar_with_sweeps(0, max_sweeps=4)[:, 4])) == 4


def test_batch_layout_and_voxel_bounds(mini):
    cfg = make_cfg(mini.data_path, augment=False)
    ds, dl, sampler = build_dataloader(cfg, CLASS_NAMES, batch_size=3, dist=False, workers=0, training=False)
    assert sampler is None
    batch = next(iter(dl))
    assert batch['batch_size'] == 3
    assert list(batch['frame_id']) == ['sample_0.pcd', 'sample_1.pcd', 'sample_2.pcd']  # OpenPCDet: Path.stem
    assert [m['token'] for m in batch['metadata']] == ['sample_0', 'sample_1', 'sample_2']
    v, c, n = batch['voxels'], batch['voxel_coords'], batch['voxel_num_points']
    assert v.shape[1:] == (10, 5) and c.shape == (len(v), 4) and n.shape == (len(v),)
    assert c.dtype == np.int32 and set(np.unique(c[:, 0])) == {0, 1, 2}
    grid = ds.grid_size  # x, y, z
    assert (c[:, 1:] >= 0).all() and (c[:, 1] < grid[2]).all() and (c[:, 2] < grid[1]).all() \
        and (c[:, 3] < grid[0]).all()
    assert (n >= 1).all() and (n <= 10).all()
    # every stored point lies in its voxel's cell; padding rows are zero
    pcr, vs = ds.point_cloud_range, np.array(cfg.DATA_PROCESSOR[2].VOXEL_SIZE)
    first = np.floor((v[:, 0, :3] - pcr[:3]) / vs).astype(int)[:, ::-1]
    np.testing.assert_array_equal(first, c[:, 1:])
    pad = np.arange(10)[None] >= n[:, None]
    assert (v[pad] == 0).all()
    # points carry the batch index; gt_boxes padded with zero rows, class index last
    assert batch['points'].shape[1] == 6 and set(np.unique(batch['points'][:, 0])) == {0, 1, 2}
    gt = batch['gt_boxes']
    assert gt.shape[0] == 3 and gt.shape[2] == 10
    for b in range(3):
        info = ds.infos[b]
        keep = np.isin(info['gt_names'], CLASS_NAMES) & (info['num_lidar_pts'] > 0)
        m = keep.sum()
        np.testing.assert_array_equal(gt[b, :m, 9], [CLASS_NAMES.index(x) + 1 for x in info['gt_names'][keep]])
        np.testing.assert_allclose(gt[b, :m, :7], info['gt_boxes'][keep, :7], rtol=1e-6)
        assert (gt[b, m:] == 0).all()


def test_label_options(mini):
    cfg = make_cfg(mini.data_path, augment=False)
    cfg.SET_NAN_VELOCITY_TO_ZEROS = False
    ds = NuScenesDataset(cfg, CLASS_NAMES, training=False)
    assert np.isnan(ds[0]['gt_boxes'][0, 7:9]).all()
    cfg.SET_NAN_VELOCITY_TO_ZEROS = True
    g = NuScenesDataset(cfg, CLASS_NAMES, training=False)[0]['gt_boxes']
    assert np.isfinite(g).all() and (g[0, 7:9] == 0).all()
    cfg.FILTER_MIN_POINTS_IN_GT = False  # keep the zero-point box; 'ignore' is still not a class
    assert len(NuScenesDataset(cfg, CLASS_NAMES, training=False)[0]['gt_boxes']) == 3
    cfg.FILTER_MIN_POINTS_IN_GT = 61  # every box has 60 points
    assert len(NuScenesDataset(cfg, CLASS_NAMES, training=False)[0]['gt_boxes']) == 0
    cfg.FILTER_MIN_POINTS_IN_GT = 1
    cfg.PRED_VELOCITY = False
    g = NuScenesDataset(cfg, CLASS_NAMES, training=False)[1]['gt_boxes']
    assert g.shape[1] == 8 and (g[:, 7] >= 1).all()


def test_cbgs_balances_classes():
    rng = np.random.default_rng(0)
    counts = {'car': 600, 'pedestrian': 250, 'bus': 40, 'barrier': 10}  # other classes absent
    infos = [{'gt_names': np.array([c])} for c, k in counts.items() for _ in range(k)]
    rng.shuffle(infos)
    fake = SimpleNamespace(class_names=CLASS_NAMES, logger=logging.getLogger('test'))
    np.random.seed(0)
    out = NuScenesDataset.balanced_infos_resampling(fake, infos)
    per_cls = {c: sum(c in i['gt_names'] for i in out) for c in counts}
    target = sum(counts.values()) / len(CLASS_NAMES)  # 90 samples per class
    for c, k in per_cls.items():
        assert abs(k - target) <= 1, per_cls
    assert len(out) == sum(per_cls.values())


def test_cbgs_in_dataset(mini):
    infos = pickle.load(open(mini.info, 'rb'))
    many = [dict(infos[0], token=f'car_only_{k}') for k in range(24)] + infos  # 30 cars, 2 peds, 1 bus
    pickle.dump(many, open(mini.data_path / 'v1.0-mini' / 'many.pkl', 'wb'))
    cfg = make_cfg(mini.data_path, info_name='many.pkl', gt_sampling=False)
    cfg.BALANCED_RESAMPLING = True
    np.random.seed(0)
    ds = NuScenesDataset(cfg, CLASS_NAMES, training=True)
    # 33 class-sample pairs over 10 classes: int(3.3) = 3 draws for each of car, pedestrian, bus
    assert len(ds) == 9
    assert sum('pedestrian' in i['gt_names'] for i in ds.infos) >= 3
    assert sum('bus' in i['gt_names'] for i in ds.infos) >= 3
    assert len(NuScenesDataset(cfg, CLASS_NAMES, training=False)) == 30  # no resampling in evaluation
    ds[0]  # resampled entries load
    cfg.INFO_PATH = {'train': ['infos_train.pkl'], 'test': ['infos_train.pkl']}
    assert len(NuScenesDataset(cfg, CLASS_NAMES, training=True)) == 6  # nothing drawn: infos kept


def test_bad_inputs_name_the_file(mini, tmp_path):
    cfg = make_cfg(mini.data_path, augment=False)
    infos = pickle.load(open(mini.info, 'rb'))
    other = [dict(i, gt_names=np.array(['Car'] * len(i['gt_names']))) for i in infos]
    bad_info = mini.data_path / 'v1.0-mini' / 'kitti_like.pkl'
    pickle.dump(other, open(bad_info, 'wb'))
    cfg.INFO_PATH = {'train': ['kitti_like.pkl'], 'test': ['kitti_like.pkl']}
    with pytest.raises(ValueError, match='kitti_like.pkl.*different class list'):
        NuScenesDataset(cfg, CLASS_NAMES, training=False)
    with pytest.raises(ValueError, match='different class list'):
        NuScenesDataset(cfg, ['Pedestrian', 'Cyclist'], training=False)
    cfg.INFO_PATH = {'train': ['nope.pkl'], 'test': ['nope.pkl']}
    with pytest.raises(FileNotFoundError, match='nope.pkl'):
        NuScenesDataset(cfg, CLASS_NAMES, training=False)
    trunc_info = mini.data_path / 'v1.0-mini' / 'trunc.pkl'
    trunc_info.write_bytes(open(mini.info, 'rb').read()[:100])
    cfg.INFO_PATH = {'train': ['trunc.pkl'], 'test': ['trunc.pkl']}
    with pytest.raises(ValueError, match='trunc.pkl'):
        NuScenesDataset(cfg, CLASS_NAMES, training=False)

    # missing / truncated LiDAR files
    root = tmp_path / 'v1.0-mini'
    root.mkdir()
    mod = [dict(i) for i in infos[:2]]
    mod[0]['lidar_path'] = 'samples/LIDAR_TOP/missing.pcd.bin'
    src = mini.data_path / 'v1.0-mini' / infos[1]['lidar_path']
    (root / 'samples' / 'LIDAR_TOP').mkdir(parents=True)
    (root / 'samples' / 'LIDAR_TOP' / 'cut.pcd.bin').write_bytes(src.read_bytes()[:-7])
    mod[1]['lidar_path'] = 'samples/LIDAR_TOP/cut.pcd.bin'
    pickle.dump(mod, open(root / 'infos.pkl', 'wb'))
    cfg = make_cfg(tmp_path, info_name='infos.pkl', augment=False)
    ds = NuScenesDataset(cfg, CLASS_NAMES, training=False)
    with pytest.raises(FileNotFoundError, match='missing.pcd.bin'):
        ds[0]
    with pytest.raises(ValueError, match='cut.pcd.bin.*truncated'):
        ds[1]


def test_workers_seeded_and_reproducible(mini):
    infos = pickle.load(open(mini.info, 'rb'))
    pickle.dump([infos[1]] * 4, open(mini.data_path / 'v1.0-mini' / 'same.pkl', 'wb'))  # one sample, 4 times
    cfg = make_cfg(mini.data_path, info_name='same.pkl', gt_sampling=False)

    def yaws(seed, epochs=1):
        torch.manual_seed(123)
        _, dl, _ = build_dataloader(cfg, CLASS_NAMES, batch_size=1, dist=False, workers=2, seed=seed, training=True)
        return [float(b['gt_boxes'][0, 0, 6]) for _ in range(epochs) for b in dl]

    a = yaws(7, epochs=2)
    assert a == yaws(7, epochs=2)  # same seed: same augmentations
    assert a[:4] != yaws(8)  # the seed matters (not torch's global RNG state)
    # the same sample gets a different augmentation in each worker and in each epoch
    assert len(set(np.round(a, 5))) == 8


def test_data_path_resolution():
    assert resolve_data_path('data/nuscenes') == REPO_ROOT / 'data' / 'nuscenes'
    assert resolve_data_path('/abs/x') == resolve_data_path('/abs/x', None)
    assert str(resolve_data_path('data/nuscenes', '/tmp/other')) == '/tmp/other'


def test_voxelizer_overflow_is_counted_and_results_not_aliased():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-10, 10, (5000, 3)), rng.uniform(0, 1, (5000, 2))], 1).astype(np.float32)
    vox = Voxelizer([0.5, 0.5, 0.5], [-10, -10, -10, 10, 10, 10], 5, max_points_per_voxel=4, max_num_voxels=100000)
    v, c, n = vox(pts)
    cells = np.unique(np.floor((pts[:, :3] + 10) / 0.5).astype(int), axis=0)
    assert len(v) == len(cells) and vox.num_dropped_points == 0
    small = Voxelizer([0.5, 0.5, 0.5], [-10, -10, -10, 10, 10, 10], 5, max_points_per_voxel=4, max_num_voxels=1000)
    v1, c1, n1 = small(pts)
    keep = v1.copy()
    assert len(v1) == 1000
    # points whose cell is not among the kept voxels were dropped
    kept = {tuple(x) for x in c1[:, ::-1]}
    cell_of = np.floor((pts[:, :3] + 10) / 0.5).astype(int)
    expected = sum(tuple(x) not in kept for x in cell_of)
    assert small.num_dropped_points == expected > 0 and small.num_overflow_calls == 1
    small(pts[::-1].copy())
    np.testing.assert_array_equal(v1, keep)  # a later call did not overwrite earlier results


def test_voxelize_batch_matches_per_sample():
    rng = np.random.default_rng(1)
    clouds = [rng.uniform(-5, 5, (n, 4)).astype(np.float32) for n in (300, 0, 500)]
    vox = Voxelizer([0.2, 0.2, 0.5], [-5, -5, -5, 5, 5, 5], 4, 5, 20000)
    batch = torch.cat([torch.cat([torch.full((len(c), 1), float(b)), torch.from_numpy(c)], 1)
                       for b, c in enumerate(clouds)])
    v, c, n = voxelize_batch(batch, vox)
    assert c.dtype == torch.int32 and c.shape[1] == 4 and set(c[:, 0].tolist()) == {0, 2}
    for b, cloud in enumerate(clouds):
        vb, cb, nb = vox(torch.from_numpy(cloud))
        sel = c[:, 0] == b
        assert torch.equal(c[sel, 1:], cb) and torch.equal(v[sel], vb) and torch.equal(n[sel], nb)
    v0, c0, n0 = voxelize_batch(torch.zeros((0, 5)), vox)
    assert v0.shape == (0, 5, 4) and c0.shape == (0, 4)


@pytest.mark.parametrize('training', [True, False])
def test_synthetic_root_with_teacher_config(synth_nusc, training):
    """The shipped CP-Voxel teacher data config on the synthetic nuScenes root, augmentation on and off."""
    from rdd.config import cfg_from_yaml_file
    from rdd.datasets.augmentor.augmentor_utils import points_in_boxes_mask
    cfg = cfg_from_yaml_file(REPO_ROOT / 'configs' / 'cp_voxel_0075.yaml')
    dcfg = cfg.DATA_CONFIG
    dcfg.VERSION = synth_nusc.version
    dcfg.INFO_PATH = {'train': [synth_nusc.train_info_path], 'test': [synth_nusc.val_info_path]}
    np.random.seed(0)
    ds, dl, _ = build_dataloader(dcfg, cfg.CLASS_NAMES, batch_size=2, dist=False, root_path=synth_nusc.data_path,
                                 workers=0, training=training)
    assert list(ds.grid_size) == [1440, 1440, 40]
    batch = next(iter(dl))
    c = batch['voxel_coords']
    assert (c[:, 1:] >= 0).all() and (c[:, 1] < 40).all() and (c[:, 2] < 1440).all() and (c[:, 3] < 1440).all()
    assert np.isfinite(batch['gt_boxes']).all()
    for b in range(2):
        pts = batch['points'][batch['points'][:, 0] == b, 1:]
        boxes = batch['gt_boxes'][b][batch['gt_boxes'][b, :, 9] > 0]
        assert len(boxes) > 0
        assert np.all(np.abs(pts[:, :2]) <= 54.0 + 1e-4)
        lags = np.unique(np.round(pts[:, 4], 3))
        assert len(lags) == 10 and lags[0] == 0 and lags[-1] <= 0.5  # 10 sweeps at 20 Hz
        inside = points_in_boxes_mask(pts, boxes).sum(0)
        in_range = (np.abs(boxes[:, :2]) < 53.0).all(1)  # evaluation keeps boxes beyond the range
        # boxes come from annotations with >= 1 LiDAR point
        assert (inside[in_range] >= 1).mean() >= 0.95, (inside, boxes[:, :2])


def test_range_masks_and_feature_encoder():
    from rdd.datasets.processor import PointFeatureEncoder, mask_boxes_outside_range, mask_points_by_range
    pcr = np.array([-10, -10, -5, 10, 10, 3], dtype=np.float32)
    pts = np.array([[10, 0, 9], [10.01, 0, 0], [0, -10, -9], [0, -10.01, 0]], dtype=np.float32)
    assert mask_points_by_range(pts, pcr).tolist() == [True, False, True, False]  # z is the voxelizer's job
    boxes = np.array([[9.9, 0, 0, 4, 2, 1, 0], [10.5, 0, 0, 4, 2, 1, 0], [0, 0, 4, 1, 1, 1, 0]], dtype=np.float32)
    assert mask_boxes_outside_range(boxes, pcr).tolist() == [True, False, False]  # centre in the 3D range
    assert mask_boxes_outside_range(boxes, pcr, use_center_to_filter=False).tolist() == [True, True, True]
    enc = PointFeatureEncoder({'encoding_type': 'absolute_coordinates_encoding',
                               'used_feature_list': ['x', 'y', 'z', 'timestamp'],
                               'src_feature_list': ['x', 'y', 'z', 'intensity', 'timestamp']})
    d = enc.forward({'points': np.arange(10, dtype=np.float32).reshape(2, 5)})
    assert enc.num_point_features == 4 and d['points'].tolist() == [[0, 1, 2, 4], [5, 6, 7, 9]] and d['use_lead_xyz']
    with pytest.raises(ValueError, match='elongation'):
        PointFeatureEncoder({'encoding_type': 'absolute_coordinates_encoding',
                             'used_feature_list': ['x', 'y', 'z', 'elongation'],
                             'src_feature_list': ['x', 'y', 'z', 'intensity', 'timestamp']})


def test_worker_batches_equal_main_process_batches(mini):
    """Workers hand the large arrays over in shared memory; the batch is the same numpy dict."""
    cfg = make_cfg(mini.data_path, augment=False)
    cfg.DATA_PROCESSOR[1].SHUFFLE_ENABLED = {'train': True, 'test': False}
    cfg.MAX_SWEEPS = 1  # the order of the drawn sweeps depends on each process's RNG
    batches = {}
    for workers in (0, 2):
        _, dl, _ = build_dataloader(cfg, CLASS_NAMES, batch_size=2, dist=False, workers=workers, training=False)
        batches[workers] = list(dl)
    assert len(batches[0]) == len(batches[2]) == 3
    for a, b in zip(batches[0], batches[2]):
        assert a.keys() == b.keys()
        for key, val in a.items():
            if isinstance(val, np.ndarray):
                assert isinstance(b[key], np.ndarray) and b[key].dtype == val.dtype, key
                np.testing.assert_array_equal(b[key], val)
            else:
                assert b[key] == val, key
