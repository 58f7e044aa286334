"""The synthetic nuScenes writer: devkit compatibility, table contents, determinism, point clouds."""
import json
import os

import numpy as np
import pytest

from rdd.datasets.synthetic import LidarConfig, clear_synthetic_root, make_point_cloud, write_synthetic_nuscenes
from rdd.datasets.synthetic.classes import CLASS_SPECS

TINY = dict(samples_per_scene=2, version='v1.0-mini', lidar=LidarConfig(azimuth_res_deg=4.0))


def _all_files(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = write_synthetic_nuscenes(tmp_path / 'a', 2, seed=3, **TINY)
    b = write_synthetic_nuscenes(tmp_path / 'b', 2, seed=3, workers=2, **TINY)  # workers do not matter
    c = write_synthetic_nuscenes(tmp_path / 'c', 2, seed=4, **TINY)
    fa, fb, fc = _all_files(a.root), _all_files(b.root), _all_files(c.root)
    assert len(fa) == 2 * 2 * 10 + 2 * 2 + 15 + len(os.listdir(os.path.join(a.root, 'maps')))  # 20 Hz + cams + json
    assert fa == fb
    assert set(fa) != set(fc) or any(fa[k] != fc[k] for k in fa)
    with pytest.raises(FileExistsError, match='already exists'):
        write_synthetic_nuscenes(a.root, 2, seed=3, **TINY)
    clear_synthetic_root(a.root, TINY['version'])
    again = write_synthetic_nuscenes(a.root, 2, seed=3, **TINY)
    assert _all_files(again.root) == fb


def test_overwrite_refuses_a_non_synthetic_root(tmp_path):
    (tmp_path / 'v1.0-mini').mkdir()
    with pytest.raises(FileExistsError, match='not a synthetic root'):
        clear_synthetic_root(tmp_path, TINY['version'])


def test_too_many_scenes_for_mini_names_the_limit(tmp_path):
    with pytest.raises(ValueError, match='v1.0-trainval'):
        write_synthetic_nuscenes(tmp_path, 20, seed=0, **TINY)


def _load(synth_nusc):
    from nuscenes.nuscenes import NuScenes
    return NuScenes(version=synth_nusc.version, dataroot=synth_nusc.root, verbose=False)


def test_devkit_loads_all_tables_and_split(synth_nusc):
    nusc = _load(synth_nusc)
    assert len(nusc.scene) == 3 and len(nusc.sample) == 12
    assert {s['name'] for s in nusc.scene} == set(synth_nusc.train_scenes + synth_nusc.val_scenes)
    from nuscenes.utils import splits  # names come from the devkit's own mini split
    assert set(synth_nusc.train_scenes) <= set(splits.mini_train) and set(synth_nusc.val_scenes) <= set(splits.mini_val)
    with open(synth_nusc.split_file) as f:
        split = json.load(f)
    assert split['mini_val'] == split['val'] == synth_nusc.val_scenes
    assert {c['name'] for c in nusc.category} >= {spec[0] for spec in CLASS_SPECS.values()}
    assert [v['token'] for v in nusc.visibility] == ['1', '2', '3', '4']
    for rec in nusc.map:
        assert os.path.isfile(os.path.join(synth_nusc.root, rec['filename']))
    for sample in nusc.sample:
        assert set(sample['data']) == {'LIDAR_TOP', 'CAM_FRONT'}
        cam = nusc.get('sample_data', sample['data']['CAM_FRONT'])
        assert os.path.getsize(os.path.join(synth_nusc.root, cam['filename'])) > 0


def test_timing_sweeps_and_lidar_mounting(synth_nusc):
    nusc = _load(synth_nusc)
    cs = nusc.calibrated_sensor[0]
    assert nusc.get('sensor', cs['sensor_token'])['channel'] == 'LIDAR_TOP'
    np.testing.assert_allclose(cs['translation'], [0.943713, 0.0, 1.84023])
    from pyquaternion import Quaternion
    np.testing.assert_allclose(Quaternion(cs['rotation']).rotation_matrix @ [1, 0, 0], [0, -1, 0], atol=1e-9)
    for scene in nusc.scene:
        sample = nusc.get('sample', scene['first_sample_token'])
        sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
        chain = [sd]
        while chain[-1]['next']:
            chain.append(nusc.get('sample_data', chain[-1]['next']))
        while chain[0]['prev']:
            chain.insert(0, nusc.get('sample_data', chain[0]['prev']))
        ts = np.array([r['timestamp'] for r in chain])
        assert np.all(np.diff(ts) == 50_000)  # 20 Hz, microseconds
        keys = [i for i, r in enumerate(chain) if r['is_key_frame']]
        assert keys == [9, 19, 29, 39]  # 2 Hz key frames, 9 sweeps before the first
        for r in chain:
            assert r['filename'].startswith('samples/' if r['is_key_frame'] else 'sweeps/')
            assert r['filename'].endswith('.pcd.bin')
            assert os.path.getsize(os.path.join(synth_nusc.root, r['filename'])) % 20 == 0


def test_annotations_are_consistent(synth_nusc):
    nusc = _load(synth_nusc)
    attr_name = {a['token']: a['name'] for a in nusc.attribute}
    names = set()
    for ann in nusc.sample_annotation:
        cat = ann['category_name']
        names.add(cat)
        assert len(ann['attribute_tokens']) <= 1
        attrs = [attr_name[t] for t in ann['attribute_tokens']]
        speed = np.linalg.norm(nusc.box_velocity(ann['token'])[:2])
        if cat.startswith('movable_object'):
            assert attrs == []
            assert np.isnan(speed) or speed < 1e-6
        elif cat.startswith('human'):
            assert attrs[0] == ('pedestrian.moving' if speed > 0.3 else 'pedestrian.standing') or np.isnan(speed)
        elif cat in ('vehicle.bicycle', 'vehicle.motorcycle'):
            assert attrs[0].startswith('cycle.')
        else:
            assert attrs[0].startswith('vehicle.')
            assert np.isnan(speed) or (attrs[0] == 'vehicle.moving') == (speed > 0.3)
        assert ann['visibility_token'] in {'1', '2', '3', '4'}
        assert ann['num_lidar_pts'] >= 0 and ann['num_radar_pts'] >= 0
    pts_by_vis = {v: [a['num_lidar_pts'] for a in nusc.sample_annotation if a['visibility_token'] == v]
                  for v in '14'}
    assert np.mean(pts_by_vis['4']) > 5 * np.mean(pts_by_vis['1'])  # occluded objects get fewer points
    for inst in nusc.instance:
        first = nusc.get('sample_annotation', inst['first_annotation_token'])
        n, rec = 1, first
        while rec['next']:
            rec = nusc.get('sample_annotation', rec['next'])
            n += 1
        assert n == inst['nbr_annotations'] and rec['token'] == inst['last_annotation_token']
    detection = {spec[0] for spec in CLASS_SPECS.values()}
    assert detection <= names  # all 10 detection classes occur (seed 0)


@pytest.mark.parametrize('cls', sorted(CLASS_SPECS))
def test_box_sizes_follow_nuscenes_means(synth_nusc, cls):
    import pickle
    with open(synth_nusc.train_info_path, 'rb') as f:
        infos = pickle.load(f)
    dims = np.concatenate([i['gt_boxes'][i['gt_names'] == cls, 3:6] for i in infos])
    if cls == 'bus':
        dims = dims[dims[:, 0] < 13.0]  # bendy buses are longer
    if cls == 'pedestrian':
        dims = dims[dims[:, 2] > 1.45]  # children are smaller
    assert len(dims) > 0
    np.testing.assert_allclose(np.median(dims, axis=0), CLASS_SPECS[cls][1], rtol=0.15)


def test_make_point_cloud_is_nuscenes_sized():
    pts = make_point_cloud(num_sweeps=10, seed=0)
    assert pts.dtype == np.float32 and pts.ndim == 2 and pts.shape[1] == 5
    assert 230_000 < len(pts) < 330_000
    lags = np.unique(np.round(pts[:, 4], 4))
    np.testing.assert_allclose(lags, np.arange(10) * 0.05, atol=1e-4)
    assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 255
    assert np.abs(np.median(pts[:, 2]) + 1.84) < 0.3  # mostly ground, 1.84 m below the sensor
    assert np.array_equal(pts, make_point_cloud(num_sweeps=10, seed=0))
    one = make_point_cloud(num_sweeps=1, seed=1)
    assert np.all(one[:, 4] == 0) and 20_000 < len(one) < 35_000
