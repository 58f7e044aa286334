"""The data pipeline as it was before it was made to copy less (main at 3e90b60), kept ONLY as a test reference.

``reference_getitem(ds, ref_sampler, index)`` reproduces the old ``NuScenesDataset.__getitem__`` on the
dataset's infos and config, stage by stage in the old way: every sweep read, transformed (``tm @ [xyz; 1]``) and
concatenated separately; each world augmentation moving the points itself; gt-sampling's point removal on the
x-sorted points and its collision check with full IoU matrices; masking then permuting the points; spconv's
``PointToVoxel`` with torch clones. The random draws are the old code's, so a new-path sample and a reference
sample under the same ``np.random`` seed must agree. Not used by the package.
"""
import numpy as np
import torch

from rdd.datasets.augmentor import augmentor_utils as au
from rdd.datasets.processor.data_processor import mask_boxes_outside_range, mask_points_by_range


# ---------------------------------------------------------------- loading (old get_sweep / get_lidar_with_sweeps)
def _read(path):
    return np.fromfile(str(path), dtype=np.float32).reshape(-1, 5)


def old_get_lidar_with_sweeps(ds, index, max_sweeps):
    info = ds.infos[index]
    pts = _read(ds.root_path / info['lidar_path'])[:, :4]
    points, times = [pts], [np.zeros((len(pts), 1))]
    n = min(max_sweeps - 1, len(info['sweeps']))
    for k in np.random.choice(len(info['sweeps']), n, replace=False):
        sweep = info['sweeps'][k]
        p = _read(ds.root_path / sweep['lidar_path'])[:, :4]
        p = p[~((np.abs(p[:, 0]) < 1.0) & (np.abs(p[:, 1]) < 1.0))]
        tm = sweep.get('transform_matrix')
        if tm is not None:
            xyz1 = np.concatenate([p[:, :3].T, np.ones((1, len(p)))], axis=0)
            p[:, :3] = (np.asarray(tm) @ xyz1)[:3].T
        points.append(p)
        times.append(np.full((len(p), 1), sweep['time_lag']))
    points = np.concatenate(points, axis=0)
    return np.concatenate([points, np.concatenate(times, axis=0).astype(points.dtype)], axis=1)


# ---------------------------------------------------------------- world augmentations moving the points
def old_flip_x(boxes, points):
    if np.random.choice([False, True], replace=False, p=[0.5, 0.5]):
        boxes[:, 1], boxes[:, 6], points[:, 1] = -boxes[:, 1], -boxes[:, 6], -points[:, 1]
        if boxes.shape[1] > 8:
            boxes[:, 8] = -boxes[:, 8]
    return boxes, points


def old_flip_y(boxes, points):
    if np.random.choice([False, True], replace=False, p=[0.5, 0.5]):
        boxes[:, 0], boxes[:, 6], points[:, 0] = -boxes[:, 0], -(boxes[:, 6] + np.pi), -points[:, 0]
        if boxes.shape[1] > 7:
            boxes[:, 7] = -boxes[:, 7]
    return boxes, points


def old_rotation(boxes, points, rot_range):
    angle = np.random.uniform(rot_range[0], rot_range[1])
    points = au.rotate_points_z(points, angle)
    boxes[:, 0:2] = au.rotate_points_z(boxes[:, 0:2], angle)
    boxes[:, 6] += angle
    if boxes.shape[1] > 8:
        boxes[:, 7:9] = au.rotate_points_z(boxes[:, 7:9], angle)
    return boxes, points


def old_scaling(boxes, points, scale_range):
    if scale_range[1] - scale_range[0] < 1e-3:
        return boxes, points
    scale = np.random.uniform(scale_range[0], scale_range[1])
    points[:, :3] *= scale
    boxes[:, :6] *= scale
    if boxes.shape[1] > 8:
        boxes[:, 7:9] *= scale
    return boxes, points


def old_translation(boxes, points, config):
    std = config['NOISE_TRANSLATE_STD']
    std = np.asarray([std] * 3 if np.isscalar(std) else std, dtype=np.float64)
    offset = (np.random.normal(0.0, 1.0, 3) * std).astype(points.dtype)
    points[:, :3] += offset
    boxes[:, :3] += offset.astype(boxes.dtype)
    return boxes, points


# ---------------------------------------------------------------- gt-sampling (old removal and collision check)
def old_points_in_boxes_mask(points, boxes):
    from rdd.ops.points_in_boxes import points_in_boxes_mask as exact
    out = np.zeros((len(points), len(boxes)), dtype=bool)
    boxes = np.ascontiguousarray(boxes[:, :7], dtype=np.float32)
    if len(points) * len(boxes) <= 200000:
        return exact(np.ascontiguousarray(points[:, :3], dtype=np.float32), boxes)
    reach = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4]) + 0.05
    order = np.argsort(points[:, 0], kind='stable')
    xs = points[order, 0]
    lo, hi = np.searchsorted(xs, boxes[:, 0] - reach, 'left'), np.searchsorted(xs, boxes[:, 0] + reach, 'right')
    parts = [order[lo[k]:hi[k]][np.abs(points[order[lo[k]:hi[k]], 1] - boxes[k, 1]) <= reach[k]]
             for k in range(len(boxes))]
    cand = np.unique(np.concatenate(parts))
    if len(cand):
        out[cand] = exact(np.ascontiguousarray(points[cand, :3], dtype=np.float32), boxes)
    return out


def old_gt_sampling(sampler, data_dict):
    gt_boxes, gt_names = data_dict['gt_boxes'], data_dict['gt_names'].astype(str)
    existed, chosen = gt_boxes, []
    for name, group in sampler.sample_groups.items():
        num = group['sample_num'] - (int(np.sum(gt_names == name)) if sampler.limit_whole_scene else 0)
        if num <= 0 or len(sampler.db_infos[name]) == 0:
            continue
        cands = sampler._draw(name, num)
        boxes = np.stack([np.asarray(c['box3d_lidar'], dtype=np.float32) for c in cands], axis=0)
        iou_ex, iou_self = au.bev_iou(boxes, existed), au.bev_iou(boxes, boxes)
        np.fill_diagonal(iou_self, 0)
        hit = iou_self.max(axis=1) > 0
        if iou_ex.shape[1] > 0:
            hit |= iou_ex.max(axis=1) > 0
        keep = np.nonzero(~hit)[0]
        existed = np.concatenate([existed, boxes[keep].astype(existed.dtype)], axis=0)
        chosen.extend(cands[i] for i in keep)
    if chosen:
        obj = np.concatenate([sampler._load_points(c) for c in chosen], axis=0)
        enlarged = au.enlarge_boxes(existed[gt_boxes.shape[0]:, :7], sampler.extra_width)
        points = data_dict['points']
        points = points[~old_points_in_boxes_mask(points, enlarged).any(axis=1)]
        data_dict['points'] = np.concatenate([obj[:, :points.shape[1]].astype(points.dtype), points], axis=0)
        data_dict['gt_boxes'] = existed
        data_dict['gt_names'] = np.concatenate([data_dict['gt_names'], np.array([c['name'] for c in chosen])])
        data_dict['gt_boxes_mask'] = np.concatenate([data_dict['gt_boxes_mask'], np.ones(len(chosen), dtype=bool)])
    return data_dict


def old_augment(ds, ref_sampler, data_dict):
    boxes_pts = None
    for cfg in ds.dataset_cfg.DATA_AUGMENTOR.AUG_CONFIG_LIST:
        if cfg['NAME'] in ds.dataset_cfg.DATA_AUGMENTOR.get('DISABLE_AUG_LIST', []):
            continue
        if cfg['NAME'] == 'gt_sampling':
            data_dict = old_gt_sampling(ref_sampler, data_dict)
            continue
        boxes_pts = (data_dict['gt_boxes'], data_dict['points'])
        if cfg['NAME'] == 'random_world_flip':
            for axis in cfg['ALONG_AXIS_LIST']:
                boxes_pts = (old_flip_x if axis == 'x' else old_flip_y)(*boxes_pts)
        elif cfg['NAME'] == 'random_world_rotation':
            boxes_pts = old_rotation(*boxes_pts, cfg['WORLD_ROT_ANGLE'])
        elif cfg['NAME'] == 'random_world_scaling':
            boxes_pts = old_scaling(*boxes_pts, cfg['WORLD_SCALE_RANGE'])
        else:
            boxes_pts = old_translation(*boxes_pts, cfg)
        data_dict['gt_boxes'], data_dict['points'] = boxes_pts
    data_dict['gt_boxes'][:, 6] = au.limit_period(data_dict['gt_boxes'][:, 6], 0.5, 2 * np.pi)
    mask = data_dict.pop('gt_boxes_mask')
    data_dict['gt_boxes'], data_dict['gt_names'] = data_dict['gt_boxes'][mask], data_dict['gt_names'][mask]
    return data_dict


# ---------------------------------------------------------------- processing and voxelization
def old_voxelize(ds, points):
    from spconv.pytorch.utils import PointToVoxel
    vox = ds.data_processor.voxelizer
    gen = PointToVoxel(vsize_xyz=vox.voxel_size, coors_range_xyz=vox.point_cloud_range,
                       num_point_features=vox.num_point_features, max_num_voxels=vox.max_num_voxels,
                       max_num_points_per_voxel=vox.max_points_per_voxel)
    v, c, n = gen(torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)))
    return v.clone().numpy(), c.clone().numpy(), n.clone().numpy()


def old_process(ds, data_dict):
    pcr = ds.point_cloud_range
    for cfg in ds.dataset_cfg.DATA_PROCESSOR:
        if cfg['NAME'] == 'mask_points_and_boxes_outside_range':
            data_dict['points'] = data_dict['points'][mask_points_by_range(data_dict['points'], pcr)]
            if ds.training and cfg.get('REMOVE_OUTSIDE_BOXES', False):
                keep = mask_boxes_outside_range(data_dict['gt_boxes'], pcr)
                data_dict['gt_boxes'], data_dict['gt_names'] = data_dict['gt_boxes'][keep], data_dict['gt_names'][keep]
        elif cfg['NAME'] == 'shuffle_points' and cfg['SHUFFLE_ENABLED'][ds.mode]:
            data_dict['points'] = data_dict['points'][np.random.permutation(data_dict['points'].shape[0])]
        elif cfg['NAME'] == 'transform_points_to_voxels':
            data_dict['voxels'], data_dict['voxel_coords'], data_dict['voxel_num_points'] = \
                old_voxelize(ds, data_dict['points'])
    return data_dict


def reference_getitem(ds, ref_sampler, index):
    """The old ``__getitem__`` of ``ds`` (no replacement of box-less samples: the caller picks samples with boxes)."""
    info = ds.infos[index]
    points = old_get_lidar_with_sweeps(ds, index, ds.dataset_cfg.MAX_SWEEPS)
    d = {'points': points}
    mask = info['num_lidar_pts'] > 0
    d['gt_names'] = np.asarray(info['gt_names'])[mask]
    d['gt_boxes'] = np.asarray(info['gt_boxes'], dtype=np.float64)[mask].copy()
    if ds.training:
        d['gt_boxes_mask'] = np.array([n in ds.class_names for n in d['gt_names']], dtype=bool)
        d = old_augment(ds, ref_sampler, d)
    keep = np.array([n in ds.class_names for n in d['gt_names']], dtype=bool)
    cls = np.array([ds.class_names.index(n) + 1 for n in d['gt_names'][keep]], dtype=np.float32).reshape(-1, 1)
    d['gt_boxes'] = np.concatenate([d['gt_boxes'][keep].astype(np.float32), cls], axis=1)
    d['gt_names'] = d['gt_names'][keep]
    d = old_process(ds, d)
    d['gt_boxes'][np.isnan(d['gt_boxes'])] = 0
    return d
