"""One synthetic nuScenes-like training batch on a config's voxel grid, for the model benchmarks.

``make_batch(cfg, sweeps, batch_size)``: each sample is ``rdd.datasets.synthetic.make_point_cloud`` with ``sweeps``
sweeps (a different seed per sample; ~28k points per sweep, as nuScenes) cropped to the config's range, plus 20
random GT boxes of the 10 nuScenes classes (``gt_boxes (B, 20, 10)``), voxelized with rdd's ``Voxelizer`` in
training mode. Returns a batch_dict of CPU tensors as the engine would pass it to the model.
"""
import numpy as np
import torch


def make_batch(cfg, sweeps=1, batch_size=1, num_boxes=20, seed=0):
    from rdd.geometry import voxel_processor_cfg
    from rdd.datasets.processor.voxelizer import Voxelizer, voxelize_batch
    from rdd.datasets.synthetic import make_point_cloud
    pcr = np.asarray(cfg.DATA_CONFIG.POINT_CLOUD_RANGE, dtype=np.float32)
    rng = np.random.RandomState(seed)
    clouds, gt = [], np.zeros((batch_size, num_boxes, 10), np.float32)
    for b in range(batch_size):
        pts = make_point_cloud(num_sweeps=sweeps, seed=seed + b).astype(np.float32)
        pts = pts[np.all((pts[:, :3] >= pcr[:3]) & (pts[:, :3] < pcr[3:]), axis=1)]
        clouds.append(np.concatenate([np.full((len(pts), 1), b, np.float32), pts], axis=1))
        gt[b, :, 0:2] = rng.uniform(0.8 * pcr[0], 0.8 * pcr[3], (num_boxes, 2))
        gt[b, :, 2] = -1.0
        gt[b, :, 3:6] = rng.uniform([1.0, 0.8, 1.0], [5.0, 2.5, 2.5], (num_boxes, 3))
        gt[b, :, 6] = rng.uniform(-np.pi, np.pi, num_boxes)
        gt[b, :, 9] = rng.randint(1, 11, num_boxes)
    pts = torch.from_numpy(np.concatenate(clouds, axis=0))
    vox = Voxelizer.from_processor_config(voxel_processor_cfg(cfg.DATA_CONFIG), pcr, pts.shape[1] - 1, 'train')
    voxels, coords, num = voxelize_batch(pts, vox)
    return {'batch_size': batch_size, 'points': pts, 'voxels': voxels, 'voxel_coords': coords,
            'voxel_num_points': num, 'gt_boxes': torch.from_numpy(gt), 'use_lead_xyz': True,
            'frame_id': np.array([f'bench{b}' for b in range(batch_size)])}
