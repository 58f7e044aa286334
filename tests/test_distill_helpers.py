"""Helpers for the distillation tests: tiny configs, a random-weight teacher checkpoint, synthetic batches."""
import copy
from pathlib import Path

import numpy as np
import torch
from easydict import EasyDict

from rdd.config import cfg_from_yaml_file
from rdd.models import build_model, build_network, model_geometry

CFG_DIR = Path(__file__).resolve().parent / 'configs'
KD_CFG = CFG_DIR / 'tiny_kd.yaml'
TEACHER_CFG = CFG_DIR / 'tiny_teacher.yaml'
STUDENT_CFG = CFG_DIR / 'tiny_student.yaml'


def write_teacher_ckpt(path, cfg_file=TEACHER_CFG, seed=0):
    """Random-weight teacher (non-trivial BN running stats) saved in OpenPCDet format; returns its state."""
    torch.manual_seed(seed)
    teacher = build_model(cfg_from_yaml_file(cfg_file))
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.save({'model_state': state, 'epoch': 0, 'it': 0, 'version': 'test'}, path)
    return state


def kd_cfg(teacher_ckpt, losses=None, cfg_file=KD_CFG, **model_overrides):
    """The tiny KD config with TEACHER_CKPT set, optionally other KD_LOSSES / MODEL keys."""
    cfg = cfg_from_yaml_file(cfg_file)
    cfg.MODEL.TEACHER_CKPT = str(teacher_ckpt) if teacher_ckpt is not None else None
    if losses is not None:
        cfg.MODEL.KD_LOSSES = [EasyDict(copy.deepcopy(loss)) for loss in losses]
    for key, value in model_overrides.items():
        cfg.MODEL[key] = value
    return cfg


def build_distiller(cfg, seed=1):
    torch.manual_seed(seed)
    return build_network(cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=model_geometry(cfg))


def make_batch(cfg, batch_size=2, seed=0, num_boxes=4, empty_sample=None, pts_per_box=120, clutter=200):
    """A voxelized batch on the config's grid: boxes of random classes with points inside, plus clutter.

    ``empty_sample``: index of a sample that gets no GT box. Returns a batch_dict (torch tensors).
    """
    from rdd.datasets.processor.voxelizer import Voxelizer, voxelize_batch
    rng = np.random.RandomState(seed)
    geom = model_geometry(cfg)
    pcr = geom.point_cloud_range
    entry = [e for e in cfg.DATA_CONFIG.DATA_PROCESSOR if e.NAME == 'transform_points_to_voxels'][0]
    vox = Voxelizer(entry.VOXEL_SIZE, pcr, 5, entry.MAX_POINTS_PER_VOXEL, entry.MAX_NUMBER_OF_VOXELS['train'])
    sizes = {1: (4.5, 1.9, 1.6), 2: (6.5, 2.5, 2.8), 9: (0.7, 0.7, 1.7), 6: (2.0, 0.8, 1.5)}
    points, gts = [], []
    for b in range(batch_size):
        n = 0 if b == empty_sample else num_boxes
        rows = []
        for _ in range(n):
            label = int(rng.choice(list(sizes)))
            dx, dy, dz = sizes[label]
            x, y = rng.uniform(pcr[0] + 3, pcr[3] - 3, size=2)
            yaw = rng.uniform(-np.pi, np.pi)
            rows.append([x, y, -1.0 + dz / 2, dx, dy, dz, yaw, rng.uniform(-1, 1), rng.uniform(-1, 1), label])
            local = rng.uniform(-0.5, 0.5, size=(pts_per_box, 3)) * np.array([dx, dy, dz])
            c, s = np.cos(yaw), np.sin(yaw)
            pts = np.stack([x + c * local[:, 0] - s * local[:, 1], y + s * local[:, 0] + c * local[:, 1],
                            -1.0 + dz / 2 + local[:, 2]], axis=1)
            points.append(np.concatenate([np.full((pts_per_box, 1), b), pts, rng.rand(pts_per_box, 1),
                                          np.zeros((pts_per_box, 1))], 1))
        bg = np.stack([rng.uniform(pcr[0], pcr[3], clutter), rng.uniform(pcr[1], pcr[4], clutter),
                       rng.uniform(-2.0, 0.0, clutter)], axis=1)
        points.append(np.concatenate([np.full((clutter, 1), b), bg, rng.rand(clutter, 1), np.zeros((clutter, 1))], 1))
        gts.append(np.array(rows, dtype=np.float32).reshape(-1, 10))
    m = max(1, max(g.shape[0] for g in gts))
    gt_boxes = np.zeros((batch_size, m, 10), dtype=np.float32)
    for b, g in enumerate(gts):
        gt_boxes[b, :g.shape[0]] = g
    pts = torch.from_numpy(np.concatenate(points).astype(np.float32))
    voxels, coords, num = voxelize_batch(pts, vox)
    return {'batch_size': batch_size, 'points': pts, 'voxels': voxels, 'voxel_coords': coords,
            'voxel_num_points': num, 'gt_boxes': torch.from_numpy(gt_boxes), 'use_lead_xyz': True,
            'frame_id': np.array([f's{b}' for b in range(batch_size)])}
