"""OpenPCDet-schema nuScenes info files (``nuscenes_infos_{N}sweeps_{train,val}.pkl``) through the devkit.

Works on any nuScenes-format dataroot: real v1.0-trainval / v1.0-mini / v1.0-test or the synthetic one. Each
info is a dict with OpenPCDet's fields (``pcdet/datasets/nuscenes/nuscenes_utils.py::fill_trainval_infos``):

* ``lidar_path`` / ``cam_front_path`` (str, relative to the dataroot), ``cam_intrinsic`` (3, 3) float64,
  ``token`` (sample token), ``timestamp`` (float, seconds), ``ref_from_car`` / ``car_from_global`` (4, 4);
* ``sweeps``: ``max_sweeps - 1`` dicts ``{lidar_path, sample_data_token, transform_matrix (4, 4) sweep LiDAR ->
  key-frame LiDAR, global_from_car, car_from_current, time_lag (s)}``, walking ``prev`` from the key frame;
  at a scene start the key frame itself is used once (``transform_matrix`` None, ``time_lag`` 0) and the
  last sweep is repeated to fill the list, as OpenPCDet does;
* unless ``v1.0-test``: ``gt_boxes`` (N, 9) float64 ``x, y, z, dx, dy, dz, yaw, vx, vy`` in the key-frame LiDAR
  frame (yaw of the box's +x axis, counter-clockwise from LiDAR +x; velocity from the devkit's
  ``box_velocity``, NaN where it cannot be estimated), ``gt_boxes_velocity`` (N, 3), ``gt_names`` (N,) detection
  names through ``MAP_NAME_FROM_GENERAL_TO_DETECTION``, ``gt_boxes_token``, ``num_lidar_pts``, ``num_radar_pts``
  (N,) int64; boxes with no LiDAR and no radar point are dropped.

Scene split: :func:`rdd.datasets.nuscenes_splits.resolve_split` (official versions: the devkit's official split,
a ``splits.json`` in the version folder ignored, as OpenPCDet does; custom versions or an explicit ``split_file``:
a devkit-format custom split file whose train / val splits are named). Unlike OpenPCDet, scenes listed in neither
split are left out.
"""
from __future__ import annotations

import logging
import os
import pickle
from functools import reduce
from typing import Optional

import numpy as np
from tqdm import tqdm

from .nuscenes_splits import resolve_split
from .nuscenes_tables import load_nuscenes

logger = logging.getLogger(__name__)

MAP_NAME_FROM_GENERAL_TO_DETECTION = {
    'human.pedestrian.adult': 'pedestrian', 'human.pedestrian.child': 'pedestrian',
    'human.pedestrian.wheelchair': 'ignore', 'human.pedestrian.stroller': 'ignore',
    'human.pedestrian.personal_mobility': 'ignore', 'human.pedestrian.police_officer': 'pedestrian',
    'human.pedestrian.construction_worker': 'pedestrian', 'animal': 'ignore', 'vehicle.car': 'car',
    'vehicle.motorcycle': 'motorcycle', 'vehicle.bicycle': 'bicycle', 'vehicle.bus.bendy': 'bus',
    'vehicle.bus.rigid': 'bus', 'vehicle.truck': 'truck', 'vehicle.construction': 'construction_vehicle',
    'vehicle.emergency.ambulance': 'ignore', 'vehicle.emergency.police': 'ignore', 'vehicle.trailer': 'trailer',
    'movable_object.barrier': 'barrier', 'movable_object.trafficcone': 'traffic_cone',
    'movable_object.pushable_pullable': 'ignore', 'movable_object.debris': 'ignore',
    'static_object.bicycle_rack': 'ignore',
}
POINT_BYTES = 5 * 4  # nuScenes .pcd.bin: 5 float32 per point


def info_path(root: str, split: str, max_sweeps: int = 10) -> str:
    """Path of the info file OpenPCDet names ``nuscenes_infos_{max_sweeps}sweeps_{split}.pkl`` in ``root``."""
    return os.path.join(root, f'nuscenes_infos_{max_sweeps}sweeps_{split}.pkl')


def check_lidar_file(path: str) -> None:
    """Raise a clear error when a LiDAR ``.pcd.bin`` is missing, empty or truncated (not whole 20-byte points)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'LiDAR file not found: {path}')
    size = os.path.getsize(path)
    if size == 0 or size % POINT_BYTES:
        raise ValueError(f'LiDAR file {path} has {size} bytes, not a positive multiple of {POINT_BYTES} '
                         f'(5 float32 per point): truncated or not a nuScenes .pcd.bin')


def quaternion_yaw(q) -> float:
    """Yaw (rad) of a box orientation: angle of its rotated +x axis in the xy plane (as OpenPCDet)."""
    v = np.dot(q.rotation_matrix, np.array([1.0, 0.0, 0.0]))
    return float(np.arctan2(v[1], v[0]))


def _sweeps(nusc, ref_sd_rec, ref_lidar_rel, ref_time, ref_from_car, car_from_global, root, max_sweeps):
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion
    curr, sweeps = ref_sd_rec, []
    while len(sweeps) < max_sweeps - 1:
        if curr['prev'] == '':
            if not sweeps:
                sweeps.append({'lidar_path': ref_lidar_rel, 'sample_data_token': curr['token'],
                               'transform_matrix': None, 'time_lag': curr['timestamp'] * 0})
            else:
                sweeps.append(sweeps[-1])
            continue
        curr = nusc.get('sample_data', curr['prev'])
        pose = nusc.get('ego_pose', curr['ego_pose_token'])
        global_from_car = transform_matrix(pose['translation'], Quaternion(pose['rotation']), inverse=False)
        cs = nusc.get('calibrated_sensor', curr['calibrated_sensor_token'])
        car_from_current = transform_matrix(cs['translation'], Quaternion(cs['rotation']), inverse=False)
        tm = reduce(np.dot, [ref_from_car, car_from_global, global_from_car, car_from_current])
        check_lidar_file(os.path.join(root, curr['filename']))
        sweeps.append({'lidar_path': curr['filename'], 'sample_data_token': curr['token'], 'transform_matrix': tm,
                       'global_from_car': global_from_car, 'car_from_current': car_from_current,
                       'time_lag': ref_time - 1e-6 * curr['timestamp']})
    return sweeps


def _gt_fields(nusc, sample, ref_sd_token, ref_pose, ref_cs):
    from pyquaternion import Quaternion
    anns = [nusc.get('sample_annotation', t) for t in sample['anns']]
    boxes = []
    for box in nusc.get_boxes(ref_sd_token):  # key frame: the sample's annotations, global frame
        box.velocity = nusc.box_velocity(box.token)
        box.translate(-np.array(ref_pose['translation']))
        box.rotate(Quaternion(ref_pose['rotation']).inverse)
        box.translate(-np.array(ref_cs['translation']))
        box.rotate(Quaternion(ref_cs['rotation']).inverse)
        boxes.append(box)
    num_lidar = np.array([a['num_lidar_pts'] for a in anns], dtype=np.int64)
    num_radar = np.array([a['num_radar_pts'] for a in anns], dtype=np.int64)
    mask = num_lidar + num_radar > 0
    locs = np.array([b.center for b in boxes], dtype=np.float64).reshape(-1, 3)
    dims = np.array([b.wlh for b in boxes], dtype=np.float64).reshape(-1, 3)[:, [1, 0, 2]]  # wlh -> dx dy dz
    velocity = np.array([b.velocity for b in boxes], dtype=np.float64).reshape(-1, 3)
    rots = np.array([quaternion_yaw(b.orientation) for b in boxes], dtype=np.float64).reshape(-1, 1)
    gt_boxes = np.concatenate([locs, dims, rots, velocity[:, :2]], axis=1)
    names = np.array([MAP_NAME_FROM_GENERAL_TO_DETECTION[b.name] for b in boxes], dtype=str)
    tokens = np.array([b.token for b in boxes], dtype=str)
    assert len(anns) == len(gt_boxes) == len(velocity)
    return {'gt_boxes': gt_boxes[mask], 'gt_boxes_velocity': velocity[mask], 'gt_names': names[mask],
            'gt_boxes_token': tokens[mask], 'num_lidar_pts': num_lidar[mask], 'num_radar_pts': num_radar[mask]}


def fill_infos(nusc, root: str, train_scenes, val_scenes, test: bool = False, max_sweeps: int = 10):
    """(train infos, val infos) for the samples of the given scene names, in ``nusc.sample`` order."""
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion
    name_of = {s['token']: s['name'] for s in nusc.scene}
    train_set, val_set = set(train_scenes), set(val_scenes)
    train_infos, val_infos = [], []
    for sample in tqdm(nusc.sample, desc='create_info', dynamic_ncols=True, disable=None):
        scene_name = name_of[sample['scene_token']]
        if scene_name not in train_set and scene_name not in val_set:
            continue
        if 'LIDAR_TOP' not in sample['data'] or 'CAM_FRONT' not in sample['data']:
            raise ValueError(f"sample {sample['token']} of scene {scene_name} has no "
                             f"{'LIDAR_TOP' if 'LIDAR_TOP' not in sample['data'] else 'CAM_FRONT'} key frame")
        ref_sd_token = sample['data']['LIDAR_TOP']
        ref_sd = nusc.get('sample_data', ref_sd_token)
        ref_cs = nusc.get('calibrated_sensor', ref_sd['calibrated_sensor_token'])
        ref_pose = nusc.get('ego_pose', ref_sd['ego_pose_token'])
        ref_time = 1e-6 * ref_sd['timestamp']
        check_lidar_file(os.path.join(root, ref_sd['filename']))
        cam_path, _, cam_intrinsic = nusc.get_sample_data(sample['data']['CAM_FRONT'])
        ref_from_car = transform_matrix(ref_cs['translation'], Quaternion(ref_cs['rotation']), inverse=True)
        car_from_global = transform_matrix(ref_pose['translation'], Quaternion(ref_pose['rotation']), inverse=True)
        info = {
            'lidar_path': ref_sd['filename'],
            'cam_front_path': os.path.relpath(cam_path, nusc.dataroot),
            'cam_intrinsic': cam_intrinsic,
            'token': sample['token'],
            'sweeps': _sweeps(nusc, ref_sd, ref_sd['filename'], ref_time, ref_from_car, car_from_global, root,
                              max_sweeps),
            'ref_from_car': ref_from_car,
            'car_from_global': car_from_global,
            'timestamp': ref_time,
        }
        if not test:
            info.update(_gt_fields(nusc, sample, ref_sd_token, ref_pose, ref_cs))
        (train_infos if scene_name in train_set else val_infos).append(info)
    return train_infos, val_infos


def create_nuscenes_infos(root: str, version: str, split_file: Optional[str] = None, max_sweeps: int = 10,
                          save_path: Optional[str] = None, train_split: Optional[str] = None,
                          val_split: Optional[str] = None) -> dict:
    """Write ``nuscenes_infos_{max_sweeps}sweeps_{train,val}.pkl`` (``_test`` for v1.0-test) into ``save_path``
    (default: ``root``, the devkit dataroot that holds ``<version>/``). Returns ``{split: path}``.

    ``split_file`` / ``train_split`` / ``val_split``: see :func:`rdd.datasets.nuscenes_splits.resolve_split`.
    """
    root = os.path.abspath(os.fspath(root))
    if max_sweeps < 1:
        raise ValueError(f'max_sweeps must be >= 1, got {max_sweeps}')
    nusc = load_nuscenes(root, version)  # a missing folder or bad table: an error naming it
    test = version.endswith('test')
    split = resolve_split(root, version, [s['name'] for s in nusc.scene], split_file, train_split, val_split)
    logger.info('%s: %d train scenes, %d val scenes from %s', version, len(split.train), len(split.val), split.source)
    train_infos, val_infos = fill_infos(nusc, root, split.train, split.val, test=test, max_sweeps=max_sweeps)
    save_path = os.path.abspath(os.fspath(save_path)) if save_path is not None else root
    os.makedirs(save_path, exist_ok=True)
    out = {}
    for split, infos in ((('test', train_infos),) if test else (('train', train_infos), ('val', val_infos))):
        path = info_path(save_path, split, max_sweeps)
        with open(path, 'wb') as f:
            pickle.dump(infos, f)
        out[split] = path
        logger.info('%s: %d samples -> %s', split, len(infos), path)
    return out
