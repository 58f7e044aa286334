"""Shared fixtures-in-functions for model tests and the OpenPCDet reference comparison.

* ``model_cfg_dict(...)``: a whole OpenPCDet-schema config (EasyDict) for the CenterPoint-Voxel family
  (teacher 0075 / 01, CP-Voxel-S / XS / XXS), built in Python so model tests do not depend on YAML files.
* ``shared_dir()``, ``compat_json(name)``: the reference files in ``<repo>/../shared/compat``.
* ``load_ref_batch()``, ``load_ref_outputs()``, ``ref_batch_dict(train)``, ``build_reference_teacher()``:
  the fixed OpenPCDet batch / outputs and the random-weight teacher loaded strictly, as the reference
  README prescribes (point cloud range override to +-21.6 m).
"""
import copy
import json
from pathlib import Path

import numpy as np
import torch
from easydict import EasyDict

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / 'shared'
COMPAT = SHARED / 'compat'
REFERENCE = COMPAT / 'reference'

CLASS_NAMES = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer',
               'barrier', 'motorcycle', 'bicycle', 'pedestrian', 'traffic_cone']
HEAD_CLASSES = [['car'], ['truck', 'construction_vehicle'], ['bus', 'trailer'], ['barrier'],
                ['motorcycle', 'bicycle'], ['pedestrian', 'traffic_cone']]
REF_RANGE = [-21.6, -21.6, -5.0, 21.6, 21.6, 3.0]

# name -> (voxel xy, range half-width, 3D WIDTH, BEV WIDTH, shared conv channel)
VARIANTS = {
    'teacher_0075': (0.075, 54.0, 1.0, 1.0, 64),
    'teacher_01': (0.1, 51.2, 1.0, 1.0, 64),
    'cp_voxel_s': (0.075, 54.0, 1.0, 0.5, 32),
    'cp_voxel_xs': (0.075, 54.0, 0.75, 0.5, 32),
    'cp_voxel_xxs': (0.075, 54.0, 0.5, 0.25, 16),
}


def model_cfg_dict(variant='teacher_0075', point_cloud_range=None, width_keys=False):
    """Whole config (EasyDict) of a CenterPoint-Voxel variant; OpenPCDet's nuScenes 0075/01 model section.

    width_keys=False (default) writes the widths as the shipped student configs do: explicit filter lists on
    OpenPCDet's class names, and ``VoxelResBackBone8xWidth`` with explicit ``NUM_FILTERS`` only where the 3D width
    is not 1. width_keys=True uses SparseKD's ``WIDTH`` keys on the width classes (``VoxelResBackBone8xWidth``,
    ``BaseBEVBackboneWidth``) for every variant.
    """
    voxel_xy, half, w3d, w2d, shared = VARIANTS[variant]
    pc_range = list(point_cloud_range) if point_cloud_range is not None else [-half, -half, -5.0, half, half, 3.0]
    bev_filters, bev_up = [128, 256], [256, 256]
    backbone_3d = {'NAME': 'VoxelResBackBone8x'}
    backbone_2d = {'NAME': 'BaseBEVBackbone', 'LAYER_NUMS': [5, 5], 'LAYER_STRIDES': [1, 2],
                   'NUM_FILTERS': bev_filters, 'UPSAMPLE_STRIDES': [1, 2], 'NUM_UPSAMPLE_FILTERS': bev_up}
    if width_keys:
        backbone_3d.update(NAME='VoxelResBackBone8xWidth', WIDTH=w3d)
        backbone_2d.update(NAME='BaseBEVBackboneWidth', WIDTH=w2d)
    else:
        if w3d != 1.0:
            backbone_3d.update(NAME='VoxelResBackBone8xWidth',
                               NUM_FILTERS=[int(c * w3d) for c in (16, 16, 32, 64, 128, 128)])
        backbone_2d['NUM_FILTERS'] = [int(c * w2d) for c in bev_filters]
        backbone_2d['NUM_UPSAMPLE_FILTERS'] = [int(c * w2d) for c in bev_up]
    cfg = {
        'CLASS_NAMES': list(CLASS_NAMES),
        'DATA_CONFIG': {
            'DATASET': 'NuScenesDataset',
            'POINT_CLOUD_RANGE': pc_range,
            'POINT_FEATURE_ENCODING': {'encoding_type': 'absolute_coordinates_encoding',
                                       'used_feature_list': ['x', 'y', 'z', 'intensity', 'timestamp'],
                                       'src_feature_list': ['x', 'y', 'z', 'intensity', 'timestamp']},
            'DATA_PROCESSOR': [
                {'NAME': 'mask_points_and_boxes_outside_range', 'REMOVE_OUTSIDE_BOXES': True},
                {'NAME': 'shuffle_points', 'SHUFFLE_ENABLED': {'train': True, 'test': False}},
                {'NAME': 'transform_points_to_voxels', 'VOXEL_SIZE': [voxel_xy, voxel_xy, 0.2],
                 'MAX_POINTS_PER_VOXEL': 10, 'MAX_NUMBER_OF_VOXELS': {'train': 120000, 'test': 160000}},
            ],
        },
        'MODEL': {
            'NAME': 'CenterPoint',
            'VFE': {'NAME': 'MeanVFE'},
            'BACKBONE_3D': backbone_3d,
            'MAP_TO_BEV': {'NAME': 'HeightCompression', 'NUM_BEV_FEATURES': int(256 * w3d)},
            'BACKBONE_2D': backbone_2d,
            'DENSE_HEAD': {
                'NAME': 'CenterHead', 'CLASS_AGNOSTIC': False,
                'CLASS_NAMES_EACH_HEAD': copy.deepcopy(HEAD_CLASSES),
                'SHARED_CONV_CHANNEL': shared, 'USE_BIAS_BEFORE_NORM': True, 'NUM_HM_CONV': 2,
                'SEPARATE_HEAD_CFG': {
                    'HEAD_ORDER': ['center', 'center_z', 'dim', 'rot', 'vel'],
                    'HEAD_DICT': {'center': {'out_channels': 2, 'num_conv': 2},
                                  'center_z': {'out_channels': 1, 'num_conv': 2},
                                  'dim': {'out_channels': 3, 'num_conv': 2},
                                  'rot': {'out_channels': 2, 'num_conv': 2},
                                  'vel': {'out_channels': 2, 'num_conv': 2}}},
                'TARGET_ASSIGNER_CONFIG': {'FEATURE_MAP_STRIDE': 8, 'NUM_MAX_OBJS': 500,
                                           'GAUSSIAN_OVERLAP': 0.1, 'MIN_RADIUS': 2},
                'LOSS_CONFIG': {'LOSS_WEIGHTS': {'cls_weight': 1.0, 'loc_weight': 0.25,
                                                 'code_weights': [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2, 1.0, 1.0]}},
                'POST_PROCESSING': {'SCORE_THRESH': 0.1,
                                    'POST_CENTER_LIMIT_RANGE': [-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
                                    'MAX_OBJ_PER_SAMPLE': 500,
                                    'NMS_CONFIG': {'NMS_TYPE': 'nms_gpu', 'NMS_THRESH': 0.2,
                                                   'NMS_PRE_MAXSIZE': 1000, 'NMS_POST_MAXSIZE': 83}},
            },
            'POST_PROCESSING': {'RECALL_THRESH_LIST': [0.3, 0.5, 0.7], 'EVAL_METRIC': 'kitti'},
        },
    }
    return EasyDict(cfg)


def shared_dir():
    """``<repo>/../shared`` (None when absent)."""
    return SHARED if SHARED.is_dir() else None


def compat_json(name):
    """(meta, OrderedDict key -> shape list) of ``compat/<name>``; skips the calling test, saying why, when the
    shared reference files are absent (a checkout without ``../shared``)."""
    import pytest

    if not (COMPAT / name).is_file():
        pytest.skip(f'OpenPCDet reference file absent: {COMPAT / name} (needs ../shared beside the repo)')
    with open(COMPAT / name) as f:
        data = json.load(f)
    return data['meta'], data['state_dict']


def load_ref_batch():
    """The fixed two-sample batch as a dict of numpy arrays."""
    with np.load(REFERENCE / 'pcdet_ref_batch.npz') as z:
        return {k: z[k] for k in z.files}


def load_ref_outputs():
    """OpenPCDet's outputs (dict with 'meta', 'train', 'eval', 'eval_bncal')."""
    return torch.load(REFERENCE / 'pcdet_ref_outputs.pt', map_location='cpu', weights_only=True)


def ref_batch_dict(batch, train=True):
    """A fresh model input from ``load_ref_batch()`` exactly as the reference README feeds it."""
    out = {'batch_size': int(batch['batch_size']),
           'voxels': torch.from_numpy(batch['voxels'].astype(np.float32)),
           'voxel_num_points': torch.from_numpy(batch['voxel_num_points'].astype(np.float32)),
           'voxel_coords': torch.from_numpy(batch['voxel_coords'].astype(np.int32))}
    if train:
        out['gt_boxes'] = torch.from_numpy(batch['gt_boxes'].astype(np.float32))
    return out


def build_reference_teacher():
    """The 0075 teacher for the reference range, with the random OpenPCDet checkpoint loaded strictly."""
    from rdd.models import build_model
    model = build_model(model_cfg_dict('teacher_0075', point_cloud_range=REF_RANGE))
    model.load_params_from_file(str(REFERENCE / 'openpcdet_cbgs_voxel0075_res3d_centerpoint.random.pth'),
                                strict=True)
    return model


def fresh_reference_teacher(model, state):
    """Reset ``model`` to ``state`` (a state_dict copy taken right after loading) before each run."""
    model.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------------------------------------- synthetic input
SMALL_RANGE = [-12.0, -12.0, -5.0, 12.0, 12.0, 3.0]  # 320 x 320 x 40 voxels at 0.075 m: fast on CPU


def voxelize_numpy(points, pc_range, voxel_size, max_points=10):
    """Minimal numpy voxelizer for tests: (N, C) points -> voxels (V, P, C), num_points (V,), coords (V, 3) zyx.

    Points outside ``pc_range`` are dropped; each voxel keeps its first ``max_points`` points in input order.
    """
    pc_range, voxel_size = np.asarray(pc_range, np.float64), np.asarray(voxel_size, np.float64)
    grid = np.round((pc_range[3:] - pc_range[:3]) / voxel_size).astype(np.int64)
    idx = np.floor((points[:, :3] - pc_range[:3]) / voxel_size).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < grid), axis=1)
    points, idx = points[ok], idx[ok]
    zyx = idx[:, ::-1]
    uniq, inverse = np.unique(zyx, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    voxels = np.zeros((len(uniq), max_points, points.shape[1]), np.float32)
    counts = np.zeros(len(uniq), np.int32)
    for p, v in enumerate(inverse):
        if counts[v] < max_points:
            voxels[v, counts[v]] = points[p]
            counts[v] += 1
    return voxels, counts, uniq.astype(np.int32)


def synthetic_points(rng, num_boxes, pc_range, num_ground=3000):
    """Ground + box-surface points (N, 5) and boxes (num_boxes, 10) with 1-based labels, inside ``pc_range``."""
    x0, y0, _, x1, y1, _ = pc_range
    ground = np.stack([rng.uniform(x0, x1, num_ground), rng.uniform(y0, y1, num_ground),
                       rng.normal(-1.8, 0.03, num_ground)], axis=1)
    pts, boxes = [ground], []
    for i in range(num_boxes):
        dims = np.array([rng.uniform(0.6, 4.8), rng.uniform(0.6, 2.0), rng.uniform(1.0, 2.0)])
        ctr = np.array([rng.uniform(x0 + 3, x1 - 3), rng.uniform(y0 + 3, y1 - 3), -1.8 + dims[2] / 2])
        yaw = rng.uniform(-np.pi, np.pi)
        local = rng.uniform(-0.5, 0.5, (300, 3)) * dims
        c, s = np.cos(yaw), np.sin(yaw)
        world = local @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + ctr
        pts.append(world)
        boxes.append([*ctr, *dims, yaw, rng.normal(0, 2), rng.normal(0, 2), 1 + i % 10])
    xyz = np.concatenate(pts)
    feats = np.concatenate([xyz, rng.uniform(0, 100, (len(xyz), 1)),
                            rng.choice(np.arange(10) * 0.05, (len(xyz), 1))], axis=1).astype(np.float32)
    return feats, np.array(boxes, np.float32).reshape(-1, 10)


def synthetic_batch(num_boxes=(4, 3), pc_range=SMALL_RANGE, voxel_size=(0.075, 0.075, 0.2), seed=0,
                    empty_samples=(), with_gt=True):
    """A collated batch dict (torch tensors) of ``len(num_boxes)`` samples, OpenPCDet layout.

    ``empty_samples``: indices of samples that get no points at all (their voxels are absent).
    gt_boxes (B, M, 10) are zero-padded to the largest sample (M >= 1).
    """
    rng = np.random.default_rng(seed)
    voxels, counts, coords, gts = [], [], [], []
    for b, nb in enumerate(num_boxes):
        pts, boxes = synthetic_points(rng, nb, pc_range)
        gts.append(boxes)
        if b in empty_samples:
            continue
        v, n, c = voxelize_numpy(pts, pc_range, voxel_size)
        voxels.append(v)
        counts.append(n)
        coords.append(np.concatenate([np.full((len(c), 1), b, np.int32), c], axis=1))
    max_m = max(1, max(len(g) for g in gts))
    gt = np.zeros((len(num_boxes), max_m, 10), np.float32)
    for b, g in enumerate(gts):
        gt[b, :len(g)] = g
    out = {'batch_size': len(num_boxes),
           'voxels': torch.from_numpy(np.concatenate(voxels)),
           'voxel_num_points': torch.from_numpy(np.concatenate(counts)),
           'voxel_coords': torch.from_numpy(np.concatenate(coords))}
    if with_gt:
        out['gt_boxes'] = torch.from_numpy(gt)
    return out


def clone_batch(batch):
    """Deep copy of a batch dict (tensors cloned)."""
    return {k: (v.clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- reference runs
def run_reference_forward(model, state, batch, train):
    """One reference run as the README prescribes: fresh load of ``state``, train()/eval(), forward.

    Returns a dict with ``batch_dict`` (after the forward, intermediate maps included), ``gt_boxes_before``
    (train), ``head_pred_dicts`` (raw head outputs cloned by a forward hook before any loss code runs) and
    either ``ret``/``tb_dict``/``loss`` (train; the loss is not back-propagated) or ``pred_dicts``/``recall_dict``
    (eval, no_grad, no gt_boxes).
    """
    model.load_state_dict(state, strict=True)
    captured = {}

    def hook(module, inputs, output):
        captured['pred_dicts'] = [{k: v.detach().clone() for k, v in d.items()}
                                  for d in module.forward_ret_dict['pred_dicts']]

    handle = model.dense_head.register_forward_hook(hook)
    inp = ref_batch_dict(batch, train=train)
    out = {'batch_dict': inp}
    try:
        if train:
            model.train()
            torch.manual_seed(0)
            out['gt_boxes_before'] = inp['gt_boxes'].clone()
            ret, tb_dict, _ = model(inp)
            out.update(ret=ret, tb_dict=tb_dict, loss=ret['loss'].detach())
        else:
            model.eval()
            with torch.no_grad():
                pred_dicts, recall_dict = model(inp)
            out.update(pred_dicts=pred_dicts, recall_dict=recall_dict)
    finally:
        handle.remove()
    out['head_pred_dicts'] = captured.get('pred_dicts')
    if train:
        out['target_dicts'] = model.dense_head.forward_ret_dict.get('target_dicts')
        out['bn_buffers_after'] = {k: v.clone() for k, v in model.state_dict().items()
                                   if k.endswith(('running_mean', 'running_var'))}
    return out


_CACHE = {}


def shared_reference():
    """Process-wide cached ``(model, state, batch, outputs)`` for the reference teacher (built once)."""
    if 'reference' not in _CACHE:
        model = build_reference_teacher()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        _CACHE['reference'] = (model, state, load_ref_batch(), load_ref_outputs())
    return _CACHE['reference']


def shared_reference_run(train):
    """Process-wide cached ``run_reference_forward`` result (one train and one eval run per test session)."""
    key = 'train' if train else 'eval'
    if key not in _CACHE:
        model, state, batch, _ = shared_reference()
        _CACHE[key] = run_reference_forward(model, state, batch, train=train)
    return _CACHE[key]


def rel_max_diff(x, ref):
    """max|x - ref| / max|ref| (float)."""
    x, ref = torch.as_tensor(x).detach().float(), torch.as_tensor(ref).detach().float()
    assert x.shape == ref.shape, f'shape {tuple(x.shape)} vs reference {tuple(ref.shape)}'
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
