"""Info creation: bad inputs give clear errors naming the file; split sources; sweeps at a scene start; CLIs."""
import json
import logging
import os
import pickle
import shutil
import sys

import pytest

from rdd.datasets.nuscenes_infos import create_nuscenes_infos, fill_infos
from rdd.datasets.synthetic import LidarConfig, write_synthetic_nuscenes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = 'v1.0-mini'


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('tiny') / VERSION)
    write_synthetic_nuscenes(root, 2, seed=1, samples_per_scene=2, version=VERSION,
                             lidar=LidarConfig(azimuth_res_deg=4.0))
    return root


@pytest.fixture
def root_copy(tiny_root, tmp_path):
    dst = str(tmp_path / VERSION)
    shutil.copytree(tiny_root, dst)
    return dst


def _first_lidar(root, key_frame=True):
    with open(os.path.join(root, VERSION, 'sample_data.json')) as f:
        recs = json.load(f)
    return next(r['filename'] for r in recs if r['fileformat'] == 'pcd' and r['is_key_frame'] == key_frame)


def test_missing_version_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / VERSION)):
        create_nuscenes_infos(str(tmp_path), VERSION)


@pytest.mark.parametrize('key_frame', [True, False])
def test_missing_lidar_file_names_it(root_copy, key_frame):
    rel = _first_lidar(root_copy, key_frame)
    os.remove(os.path.join(root_copy, rel))
    with pytest.raises(FileNotFoundError, match=os.path.basename(rel)):
        create_nuscenes_infos(root_copy, VERSION)


def test_truncated_lidar_file_names_it(root_copy):
    rel = _first_lidar(root_copy)
    path = os.path.join(root_copy, rel)
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) - 6)
    with pytest.raises(ValueError, match=rf'{os.path.basename(rel)}.*truncated'):
        create_nuscenes_infos(root_copy, VERSION)


def test_empty_split_names_the_split_file(root_copy, tmp_path):
    split = tmp_path / 'my_split.json'
    split.write_text(json.dumps({'train': [], 'val': []}))
    with pytest.raises(ValueError, match=r'empty train split.*my_split\.json'):
        create_nuscenes_infos(root_copy, VERSION, split_file=str(split))
    with open(os.path.join(root_copy, VERSION, 'splits.json')) as f:
        names = json.load(f)
    split.write_text(json.dumps({'train': names['train'], 'val': []}))
    with pytest.raises(ValueError, match=r'empty val split.*my_split\.json'):
        create_nuscenes_infos(root_copy, VERSION, split_file=str(split))
    split.write_text(json.dumps({'train': names['train'], 'val': ['scene-9999']}))
    with pytest.raises(ValueError, match=r'my_split\.json names scenes not in.*scene-9999'):
        create_nuscenes_infos(root_copy, VERSION, split_file=str(split))
    with pytest.raises(FileNotFoundError, match='nope.json'):
        create_nuscenes_infos(root_copy, VERSION, split_file=str(tmp_path / 'nope.json'))


def test_custom_split_file_and_official_split(root_copy, tmp_path):
    with open(os.path.join(root_copy, VERSION, 'splits.json')) as f:
        names = json.load(f)
    default = create_nuscenes_infos(root_copy, VERSION)
    with open(default['val'], 'rb') as f:
        val_default = pickle.load(f)
    # swapped split through --split-file, written elsewhere
    split = tmp_path / 'swap.json'
    split.write_text(json.dumps({'train': names['val'], 'val': names['train']}))
    out = create_nuscenes_infos(root_copy, VERSION, split_file=str(split), save_path=str(tmp_path / 'out'))
    with open(out['train'], 'rb') as f:
        assert [i['token'] for i in pickle.load(f)] == [i['token'] for i in val_default]
    # without splits.json the devkit's official mini split applies as well (the synthetic scenes carry its names)
    os.remove(os.path.join(root_copy, VERSION, 'splits.json'))
    official = create_nuscenes_infos(root_copy, VERSION, save_path=str(tmp_path / 'official'))
    with open(official['val'], 'rb') as f:
        assert [i['token'] for i in pickle.load(f)] == [i['token'] for i in val_default]


def _official_mini_names():
    from nuscenes.utils.splits import mini_train, mini_val
    return mini_train, mini_val


def test_official_version_ignores_a_custom_splits_json(root_copy, tmp_path, caplog):
    """Another project's nuScenes-format root may hold a devkit custom-split splits.json with its own split names
    in an official version folder: OpenPCDet uses the devkit's official split there, and so do we (logged)."""
    path = os.path.join(root_copy, VERSION, 'splits.json')
    with open(path) as f:
        scenes = json.load(f)
    with open(path, 'w') as f:  # devkit custom-split format: any split names; this one swaps the two scenes sets
        json.dump({'my_train': scenes['val'], 'holdout': scenes['train']}, f)
    with caplog.at_level(logging.INFO):
        out = create_nuscenes_infos(root_copy, VERSION, save_path=str(tmp_path / 'out'))
    mini_train, mini_val = _official_mini_names()
    nusc_scene_of = _scene_of_samples(root_copy)
    for split, official in (('train', mini_train), ('val', mini_val)):
        with open(out[split], 'rb') as f:
            assert {nusc_scene_of[i['token']] for i in pickle.load(f)} == set(scenes[split]) <= set(official)
    assert "official v1.0-mini split (mini_train / mini_val" in caplog.text
    assert f'ignoring {path}' in caplog.text
    # the same file used on purpose, naming its splits
    out = create_nuscenes_infos(root_copy, VERSION, split_file=path, train_split='my_train', val_split='holdout',
                                save_path=str(tmp_path / 'custom'))
    with open(out['train'], 'rb') as f:
        assert {nusc_scene_of[i['token']] for i in pickle.load(f)} == set(scenes['val'])
    with pytest.raises(ValueError, match=r"no split 'train' \(it has \['holdout', 'my_train'\]\).*--train_split"):
        create_nuscenes_infos(root_copy, VERSION, split_file=path)
    with pytest.raises(ValueError, match='--train_split / --val_split name splits of a custom split file'):
        create_nuscenes_infos(root_copy, VERSION, train_split='my_train')


def _scene_of_samples(root, version=VERSION):
    """sample token -> scene name, read from the JSON tables."""
    with open(os.path.join(root, version, 'scene.json')) as f:
        scene_name = {s['token']: s['name'] for s in json.load(f)}
    with open(os.path.join(root, version, 'sample.json')) as f:
        return {s['token']: scene_name[s['scene_token']] for s in json.load(f)}


def test_custom_version_uses_its_split_file_with_named_splits(tmp_path, caplog):
    root = str(tmp_path / 'synth')
    out = write_synthetic_nuscenes(root, 3, seed=0, samples_per_scene=1, version='v1.0-synth',
                                   lidar=LidarConfig(azimuth_res_deg=6.0))
    with open(out.split_file, 'w') as f:
        json.dump({'fit': ['scene-synth-0002', 'scene-synth-0000'], 'check': ['scene-synth-0001'], 'other': []}, f)
    with caplog.at_level(logging.INFO):
        paths = create_nuscenes_infos(root, 'v1.0-synth', train_split='fit', val_split='check')
    scene_of = _scene_of_samples(root, 'v1.0-synth')
    with open(paths['train'], 'rb') as f:
        assert sorted(scene_of[i['token']] for i in pickle.load(f)) == ['scene-synth-0000', 'scene-synth-0002']
    with open(paths['val'], 'rb') as f:
        assert [scene_of[i['token']] for i in pickle.load(f)] == ['scene-synth-0001']
    assert f"split file {out.split_file} (train: 'fit', val: 'check')" in caplog.text
    with open(out.split_file, 'w') as f:
        f.write('{"fit": ["scene-synth-0000"')  # truncated
    with pytest.raises(ValueError, match=r'splits\.json is not valid JSON'):
        create_nuscenes_infos(root, 'v1.0-synth', train_split='fit', val_split='check')


def test_scene_start_repeats_sweeps_like_openpcdet(tiny_root):
    """OpenPCDet's rule at a scene start: a key frame without any previous sweep uses itself (transform None,
    time_lag 0); when the sweeps run out, the last one found is repeated."""
    from nuscenes.nuscenes import NuScenes
    nusc = NuScenes(version=VERSION, dataroot=tiny_root, verbose=False)
    scene = nusc.scene[0]
    key = nusc.get('sample_data', nusc.get('sample', scene['first_sample_token'])['data']['LIDAR_TOP'])
    third_prev = nusc.get('sample_data', nusc.get('sample_data', nusc.get('sample_data', key['prev'])['prev'])['prev'])
    third_prev['prev'] = ''  # the scene now starts 3 sweeps before its first key frame
    train, _ = fill_infos(nusc, tiny_root, [scene['name']], [], max_sweeps=10)
    sweeps = train[0]['sweeps']
    assert len(sweeps) == 9 and all(s['transform_matrix'] is not None for s in sweeps)
    assert [s['sample_data_token'] for s in sweeps[2:]] == [third_prev['token']] * 7
    assert sweeps[2]['time_lag'] == pytest.approx(0.15, abs=1e-5)
    key['prev'] = ''  # and now at its first key frame
    train, _ = fill_infos(nusc, tiny_root, [scene['name']], [], max_sweeps=10)
    sweeps = train[0]['sweeps']
    assert len(sweeps) == 9 and all(s is sweeps[0] for s in sweeps)
    assert sweeps[0] == {'lidar_path': train[0]['lidar_path'], 'sample_data_token': key['token'],
                         'transform_matrix': None, 'time_lag': 0}
    short, _ = fill_infos(nusc, tiny_root, [scene['name']], [], max_sweeps=1)
    assert short[0]['sweeps'] == []


def test_clis_write_root_infos_and_database(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(REPO, 'tools'))
    try:
        import create_data
        import make_synthetic_nuscenes
    finally:
        sys.path.pop(0)
    root = str(tmp_path / 'v1.0-trainval')
    assert make_synthetic_nuscenes.main(['--root', root, '--scenes', '2', '--seed', '2', '--samples-per-scene', '1',
                                         '--azimuth-res', '6', '--workers', '1']) == 0
    assert create_data.main(['nuscenes', '--root', root, '--version', 'v1.0-trainval']) == 0
    for name in ('nuscenes_infos_10sweeps_train.pkl', 'nuscenes_infos_10sweeps_val.pkl',
                 'nuscenes_dbinfos_10sweeps_withvelo.pkl', 'gt_database_10sweeps_withvelo'):
        assert os.path.exists(os.path.join(root, name)), name
    with open(os.path.join(root, 'nuscenes_infos_10sweeps_val.pkl'), 'rb') as f:
        val = pickle.load(f)
    assert len(val) == 1 and len(val[0]['sweeps']) == 9 and len(val[0]['gt_boxes']) > 0
    with pytest.raises(SystemExit):
        create_data.main(['nuscenes'])  # --root is required


def test_custom_version_name_needs_the_split_file(tmp_path):
    root = str(tmp_path / 'synth')
    out = write_synthetic_nuscenes(root, 3, seed=0, samples_per_scene=1, version='v1.0-synth',
                                   lidar=LidarConfig(azimuth_res_deg=6.0))
    assert out.train_scenes == ['scene-synth-0000', 'scene-synth-0001'] and out.val_scenes == ['scene-synth-0002']
    paths = create_nuscenes_infos(root, 'v1.0-synth')
    with open(paths['val'], 'rb') as f:
        assert len(pickle.load(f)) == 1
    os.remove(out.split_file)
    with pytest.raises(ValueError, match=r"'v1.0-synth' is not an official nuScenes version.*needs a custom split "
                                         r"file.*v1\.0-synth/splits\.json"):
        create_nuscenes_infos(root, 'v1.0-synth')
