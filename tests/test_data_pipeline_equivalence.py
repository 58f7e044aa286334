"""The copy-less data pipeline against the old one (tests/reference_data_pipeline.py), sample by sample.

Same ``np.random`` seed on both sides: the same random draws must be consumed (the RNG states agree afterwards),
outputs are bitwise equal where the order of operations did not change (loading, test mode, gt-sampling, flips,
voxelization) and within 1e-5 (relative to the coordinate range) where world transforms are composed.
"""
import copy

import numpy as np
import pytest
import torch

import reference_data_pipeline as ref
from rdd.datasets.augmentor import DataBaseSampler
from rdd.config import ROOT_DIR as REPO_ROOT
from rdd.datasets.nuscenes_dataset import NuScenesDataset
from rdd.datasets.processor import Voxelizer

from test_dataset_helpers import CLASS_NAMES, make_cfg, make_mini_root

KEYS = ('points', 'gt_boxes', 'voxels', 'voxel_coords', 'voxel_num_points')


@pytest.fixture(scope='module')
def mini_path(tmp_path_factory):
    return make_mini_root(tmp_path_factory.mktemp('mini_eq'))[0]


def teacher_dataset(synth_nusc, training, disable=()):
    from rdd.config import cfg_from_yaml_file
    cfg = cfg_from_yaml_file(REPO_ROOT / 'configs' / 'cp_voxel_0075.yaml')
    d = cfg.DATA_CONFIG
    d.VERSION, d.BALANCED_RESAMPLING = synth_nusc.version, False
    d.INFO_PATH = {'train': [synth_nusc.train_info_path], 'test': [synth_nusc.val_info_path]}
    d.DATA_AUGMENTOR.DISABLE_AUG_LIST = list(disable)
    return NuScenesDataset(d, cfg.CLASS_NAMES, training=training, root_path=synth_nusc.data_path)


def sampler_copy(ds):
    found = [a for a in (ds.data_augmentor.data_augmentor_queue if ds.data_augmentor else ())
             if isinstance(a, DataBaseSampler)]
    return copy.deepcopy(found[0]) if found else None


def both(ds, ref_sampler, index, seed):
    """(new sample, reference sample); asserts that both consumed the same random draws."""
    np.random.seed(seed)
    new = ds[index]
    state_new = np.random.get_state()
    np.random.seed(seed)
    old = ref.reference_getitem(ds, ref_sampler, index)
    state_old = np.random.get_state()
    assert np.array_equal(state_new[1], state_old[1]) and state_new[2] == state_old[2], 'different random draws'
    return new, old


def test_loading_is_bitwise_the_old_merge(mini_path, synth_nusc):
    for ds in (NuScenesDataset(make_cfg(mini_path, augment=False), CLASS_NAMES, training=False),
               teacher_dataset(synth_nusc, training=False)):
        for i in range(len(ds)):
            np.random.seed(i)
            new = ds.get_lidar_with_sweeps(i, max_sweeps=10)
            np.random.seed(i)
            assert np.array_equal(new, ref.old_get_lidar_with_sweeps(ds, i, 10))


@pytest.mark.parametrize('root', ['mini', 'synthetic'])
def test_test_mode_samples_are_bitwise_equal(root, mini_path, synth_nusc):
    """Test mode: load, range mask, shuffle (on in the mini config), voxelization: nothing composed."""
    ds = NuScenesDataset(make_cfg(mini_path), CLASS_NAMES, training=False) if root == 'mini' \
        else teacher_dataset(synth_nusc, training=False)
    for i in range(min(len(ds), 4)):
        new, old = both(ds, None, i, seed=10 + i)
        for key in KEYS:
            assert new[key].dtype == old[key].dtype and np.array_equal(new[key], old[key]), (i, key)


def test_flips_and_gt_sampling_are_bitwise_equal(mini_path):
    """Flips only (exact in any order) after gt-sampling (same removal and paste): every output bitwise equal."""
    cfg = make_cfg(mini_path)
    cfg.DATA_AUGMENTOR.DISABLE_AUG_LIST = ['random_world_rotation', 'random_world_scaling',
                                           'random_world_translation']
    ds = NuScenesDataset(cfg, CLASS_NAMES, training=True)
    sampler = sampler_copy(ds)
    for i in range(len(ds)):
        new, old = both(ds, sampler, i, seed=20 + i)
        for key in KEYS:
            assert np.array_equal(new[key], old[key]), (i, key)


def _assert_composed_close(new, old, i):
    assert np.array_equal(new['gt_boxes'], old['gt_boxes']), i  # boxes: same operations in the same order
    assert new['points'].shape == old['points'].shape, i
    scale = max(1.0, float(np.abs(old['points'][:, :3]).max()))
    assert np.abs(new['points'] - old['points']).max() <= 1e-5 * scale, i
    assert np.array_equal(new['points'][:, 3:], old['points'][:, 3:]), i
    # a point within ~1e-5 m of a voxel face may land in the neighbouring voxel; nothing else may differ
    n_new, n_old = len(new['voxels']), len(old['voxels'])
    assert abs(n_new - n_old) <= max(2, 1e-3 * n_old), (i, n_new, n_old)
    same = {tuple(c) for c in old['voxel_coords']}
    assert np.mean([tuple(c) in same for c in new['voxel_coords']]) >= 0.999, i


@pytest.mark.parametrize('root', ['mini', 'synthetic'])
def test_train_mode_samples_match_the_old_path(root, mini_path, synth_nusc):
    """gt-sampling + flip + rotation + scaling + translation (the points moved once by the composed transform)."""
    ds = NuScenesDataset(make_cfg(mini_path), CLASS_NAMES, training=True) if root == 'mini' \
        else teacher_dataset(synth_nusc, training=True)
    sampler = sampler_copy(ds)
    for i in range(min(len(ds), 4)):
        new, old = both(ds, sampler, i, seed=30 + i)
        _assert_composed_close(new, old, i)


def test_voxelizer_is_bitwise_spconvs_point_to_voxel_at_any_thread_count(synth_nusc):
    ds = teacher_dataset(synth_nusc, training=False)
    pts = ds.get_lidar_with_sweeps(0, max_sweeps=10)
    pts = np.ascontiguousarray(pts[np.all(np.abs(pts[:, :2]) < 54, axis=1)])
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got = ds.data_processor.voxelizer(pts)
            want = ref.old_voxelize(ds, pts)
            for a, b in zip(got, want):
                assert a.dtype == b.dtype and np.array_equal(a, b)
    finally:
        torch.set_num_threads(threads)
    small = Voxelizer([0.075, 0.075, 0.2], [-54, -54, -5, 54, 54, 3], 5, 10, 1000)
    v, c, n = small(torch.from_numpy(pts))
    assert isinstance(v, torch.Tensor) and v.shape == (1000, 10, 5) and small.num_dropped_points > 0


@pytest.mark.parametrize('training', [False, True])
def test_data_path_runs_no_multithreaded_torch_op(synth_nusc, training):
    """torch splits an op over its intra-op threads only above 32768 elements (at::internal::GRAIN_SIZE); the
    per-sample path must never get there, so its speed cannot depend on the torch thread count."""
    ds = teacher_dataset(synth_nusc, training=training)
    np.random.seed(0)
    ds[0]  # warm-up: builds the voxelizer's hash table
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        ds[1]
    big = [(e.name, e.input_shapes) for e in prof.events()
           if any(np.prod(s) >= 32768 for s in e.input_shapes if isinstance(s, (list, tuple)) and s)]
    assert not big, big[:5]
