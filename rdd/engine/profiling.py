"""Profile a config's model on one point cloud: parameters, MACs and CPU latency (``tools/flops.py``).

Voxelises with the dataset's :class:`~rdd.datasets.processor.voxelizer.Voxelizer` and counts with
:mod:`rdd.models.complexity`.
"""
import numpy as np
import torch

from rdd.datasets.processor.voxelizer import Voxelizer
from rdd.geometry import voxel_processor_cfg
from rdd.models import build_model, model_geometry
from rdd.models.complexity import count_macs, count_parameters, measure_latency


def voxelize_for_model(cfg, points, geometry=None):
    """One-sample batch_dict for ``cfg``'s model from raw points (N, C) (numpy), with the config's voxel params.

    Uses ``DATA_CONFIG.DATA_PROCESSOR``'s ``transform_points_to_voxels`` entry (test-mode MAX_NUMBER_OF_VOXELS)
    and the dataset's :class:`rdd.datasets.processor.voxelizer.Voxelizer` (spconv ``PointToVoxel``).
    """
    geo = geometry or model_geometry(cfg)
    num_features = geo.point_feature_encoder.num_point_features
    pts = np.ascontiguousarray(points[:, :num_features], dtype=np.float32)
    vox = Voxelizer.from_processor_config(voxel_processor_cfg(cfg.DATA_CONFIG), geo.point_cloud_range,
                                          num_features, 'test')
    voxels, coords, num = vox(pts)
    coords = np.concatenate([np.zeros((len(coords), 1), np.int32), coords], axis=1)
    return {'batch_size': 1, 'voxels': torch.from_numpy(voxels), 'voxel_num_points': torch.from_numpy(num),
            'voxel_coords': torch.from_numpy(coords)}


def profile_model(cfg, points, runs=3, cfg_name=None):
    """Params, MACs and CPU latency of ``cfg``'s model on one cloud; returns the JSON-ready dict."""
    model = build_model(cfg)
    batch = voxelize_for_model(cfg, points)

    def fresh():
        return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}

    total_params, params = count_parameters(model)
    total_macs, macs, layers = count_macs(model, fresh())
    latency = measure_latency(model, fresh, runs=runs) if runs > 0 else None
    sparse = [l for l in layers if 'pairs' in l]
    return {
        'cfg': cfg_name, 'params': int(total_params), 'macs': int(total_macs), 'latency_ms': latency,
        'num_voxels': int(batch['voxels'].shape[0]), 'num_points': int(points.shape[0]),
        'sparse_conv_macs': int(sum(l['macs'] for l in sparse)),
        'modules': {n: {'params': int(params.get(n, 0)), 'macs': int(macs.get(n, 0))} for n in params},
        'threads': torch.get_num_threads(),
    }
