"""Ground-truth database sampling ("gt_sampling", copy-paste augmentation), OpenPCDet semantics.

The database is OpenPCDet's ``nuscenes_dbinfos_10sweeps_withvelo.pkl``: ``{class_name: [db_info, ...]}`` with
``db_info = {name, path (relative to the version root), image_idx, gt_idx, box3d_lidar (9,),
num_points_in_gt}``; ``path`` holds the object's points ``(K, NUM_POINT_FEATURES)`` float32, xyz relative
to the box centre.

Per scene and class, ``SAMPLE_GROUPS`` gives a target count; with ``LIMIT_WHOLE_SCENE`` the count is
reduced by the objects of that class already in the scene. Candidates are drawn without replacement from a
per-class permutation (re-shuffled when used up). A candidate survives the collision check only if its
rotated BEV box overlaps neither an existing box (any class, also ignored ones) nor another candidate (as in
OpenPCDet, both members of an overlapping candidate pair are dropped). Points of the scene inside the
(optionally enlarged) survivors are removed and the survivors' points are added.
"""
import logging
from pathlib import Path

import numpy as np

from ..pickle_utils import LoggerFreePickleMixin, load_pickle
from . import augmentor_utils

logger = logging.getLogger(__name__)


class DataBaseSampler(LoggerFreePickleMixin):
    """Copy-paste sampler.

    Args:
        root_path (Path): version root; ``DB_INFO_PATH`` entries and db ``path``s are relative to it.
        sampler_cfg (dict): OpenPCDet ``gt_sampling`` config (DB_INFO_PATH, PREPARE, SAMPLE_GROUPS,
            NUM_POINT_FEATURES, REMOVE_EXTRA_WIDTH, LIMIT_WHOLE_SCENE, DATABASE_WITH_FAKELIDAR).
        class_names (list[str]): classes to sample.
    """

    LOGGER_NAME = __name__

    def __init__(self, root_path, sampler_cfg, class_names, logger=None):
        self.root_path = Path(root_path)
        self.sampler_cfg = sampler_cfg
        self.class_names = list(class_names)
        self.logger = logger or logging.getLogger(self.LOGGER_NAME)
        if sampler_cfg.get('DATABASE_WITH_FAKELIDAR', False):
            raise ValueError('gt_sampling: DATABASE_WITH_FAKELIDAR=True (KITTI fake-lidar boxes) is not supported '
                             'for nuScenes databases')
        if sampler_cfg.get('USE_ROAD_PLANE', False):
            raise ValueError('gt_sampling: USE_ROAD_PLANE is KITTI-only and not supported here')
        self.num_point_features = int(sampler_cfg.NUM_POINT_FEATURES)
        self.extra_width = sampler_cfg.get('REMOVE_EXTRA_WIDTH', [0.0, 0.0, 0.0])
        self.limit_whole_scene = sampler_cfg.get('LIMIT_WHOLE_SCENE', False)

        self.db_infos = {name: [] for name in self.class_names}
        for rel in sampler_cfg.DB_INFO_PATH:
            path = self.root_path.resolve() / rel
            infos = load_pickle(path, 'gt_sampling: GT database info file (DB_INFO_PATH)')
            if not isinstance(infos, dict):
                raise ValueError(f'gt_sampling: {path} must hold a dict {{class_name: [db_info]}}, '
                                 f'got {type(infos).__name__}')
            for name in self.class_names:
                self.db_infos[name].extend(infos.get(name, []))

        for func_name, val in sampler_cfg.get('PREPARE', {}).items():
            if func_name != 'filter_by_min_points':
                raise ValueError(f'gt_sampling: unknown PREPARE step {func_name!r} (supported: filter_by_min_points)')
            self.db_infos = self.filter_by_min_points(self.db_infos, val)

        self.sample_groups = {}
        for item in sampler_cfg.SAMPLE_GROUPS:
            name, num = item.split(':')
            if name not in self.class_names:
                continue
            self.sample_groups[name] = {'sample_num': int(num), 'pointer': len(self.db_infos[name]),
                                        'indices': np.arange(len(self.db_infos[name]))}

    def filter_by_min_points(self, db_infos, min_gt_points_list):
        """Keep database objects with at least ``k`` points; entries are ``'class:k'`` strings."""
        for name_num in min_gt_points_list:
            name, min_num = name_num.split(':')
            min_num = int(min_num)
            if min_num > 0 and name in db_infos:
                before = len(db_infos[name])
                db_infos[name] = [info for info in db_infos[name] if info['num_points_in_gt'] >= min_num]
                self.logger.info('Database filter by min points %s: %d => %d', name, before, len(db_infos[name]))
        return db_infos

    def _draw(self, name, num):
        """Next ``num`` database entries of class ``name`` from its running permutation."""
        group = self.sample_groups[name]
        if group['pointer'] >= len(self.db_infos[name]):
            group['indices'] = np.random.permutation(len(self.db_infos[name]))
            group['pointer'] = 0
        idx = group['indices'][group['pointer']:group['pointer'] + num]
        group['pointer'] += num
        return [self.db_infos[name][i] for i in idx]

    def _load_points(self, info):
        path = self.root_path / info['path']
        try:
            raw = np.fromfile(str(path), dtype=np.float32)
        except OSError as err:
            raise FileNotFoundError(f'gt_sampling: cannot read database points {path}: {err}') from err
        if raw.size % self.num_point_features:
            raise ValueError(f'gt_sampling: {path} has {raw.size} floats, not a multiple of '
                             f'NUM_POINT_FEATURES={self.num_point_features} (truncated or wrong layout)')
        pts = raw.reshape(-1, self.num_point_features)
        pts[:, :3] += np.asarray(info['box3d_lidar'][:3], dtype=np.float32)
        return pts

    @staticmethod
    def _paste(points, obj_points, boxes):
        """``[obj_points; points outside boxes]`` written once into a new array (N', C)."""
        obj_points = obj_points[:, :points.shape[1]] if obj_points.shape[1] >= points.shape[1] else obj_points
        if obj_points.shape[1] != points.shape[1]:
            raise ValueError(f'gt_sampling: database points have {obj_points.shape[1]} features, scene points '
                             f'{points.shape[1]}')
        keep = augmentor_utils.points_outside_boxes(points, boxes)
        out = np.empty((len(obj_points) + int(keep.sum()), points.shape[1]), dtype=points.dtype)
        out[:len(obj_points)] = obj_points
        np.compress(keep, points, axis=0, out=out[len(obj_points):])
        return out

    def __call__(self, data_dict):
        """Add sampled objects to ``data_dict`` (keys ``points``, ``gt_boxes``, ``gt_names``, ``gt_boxes_mask``).

        Sampled boxes are appended after the existing ones with ``gt_boxes_mask`` True.
        """
        gt_boxes = data_dict['gt_boxes']
        gt_names = data_dict['gt_names'].astype(str)
        existed = gt_boxes
        chosen = []
        for name, group in self.sample_groups.items():
            num = group['sample_num']
            if self.limit_whole_scene:
                num -= int(np.sum(gt_names == name))
            if num <= 0 or len(self.db_infos[name]) == 0:
                continue
            cands = self._draw(name, num)
            boxes = np.stack([np.asarray(c['box3d_lidar'], dtype=np.float32) for c in cands], axis=0)
            if boxes.shape[1] != existed.shape[1]:
                raise ValueError(f'gt_sampling: database boxes have {boxes.shape[1]} columns, scene boxes '
                                 f'{existed.shape[1]} (velocity present in one and not the other?)')
            hit = augmentor_utils.bev_overlaps(boxes).any(axis=1) | \
                augmentor_utils.bev_overlaps(boxes, existed).any(axis=1)
            keep = np.nonzero(~hit)[0]
            existed = np.concatenate([existed, boxes[keep].astype(existed.dtype)], axis=0)
            chosen.extend(cands[i] for i in keep)

        if chosen:
            sampled_boxes = existed[gt_boxes.shape[0]:]
            obj_points = np.concatenate([self._load_points(c) for c in chosen], axis=0)
            data_dict['points'] = self._paste(data_dict['points'], obj_points,
                                              augmentor_utils.enlarge_boxes(sampled_boxes[:, :7], self.extra_width))
            data_dict['gt_boxes'] = existed
            data_dict['gt_names'] = np.concatenate([data_dict['gt_names'], np.array([c['name'] for c in chosen])])
            data_dict['gt_boxes_mask'] = np.concatenate(
                [data_dict['gt_boxes_mask'], np.ones(len(chosen), dtype=bool)])
        return data_dict
