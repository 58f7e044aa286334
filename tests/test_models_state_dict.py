"""The detectors' state_dicts equal OpenPCDet's key by key (order too) and shape by shape."""

import numpy as np
import pytest
import torch

from reference_utils import COMPAT, REPO, compat_json, model_cfg_dict
from rdd.errors import ConfigError, RegistryError
from rdd.models import build_model, build_network, model_geometry

needs_compat = pytest.mark.skipif(not COMPAT.is_dir(), reason=f'reference files absent: {COMPAT}')

CASES = [
    ('teacher_0075', 'openpcdet_cbgs_voxel0075_res3d_centerpoint.state_dict.json', False),
    ('teacher_0075', 'openpcdet_cbgs_voxel0075_res3d_centerpoint.state_dict.json', True),  # width classes, WIDTH 1
    ('teacher_01', 'openpcdet_cbgs_voxel01_res3d_centerpoint.state_dict.json', False),
    ('cp_voxel_s', 'openpcdet_cp_voxel_s_0075.state_dict.json', True),   # SparseKD WIDTH keys on the width classes
    ('cp_voxel_s', 'openpcdet_cp_voxel_s_0075.state_dict.json', False),  # OpenPCDet --set overrides
]


def _params(module):
    return sum(p.numel() for p in module.parameters())


def assert_state_dict_matches(model, ref):
    sd = model.state_dict()
    assert list(sd) == list(ref), 'key order/names differ; first difference: ' + next(
        (f'{a} != {b}' for a, b in zip(sd, ref) if a != b), f'lengths {len(sd)} vs {len(ref)}')
    bad = {k: (list(sd[k].shape), ref[k]) for k in ref if list(sd[k].shape) != ref[k]}
    assert not bad, f'mis-shaped keys: {bad}'


@needs_compat
@pytest.mark.parametrize('variant,json_name,width_keys', CASES)
def test_state_dict_equals_openpcdet(variant, json_name, width_keys):
    meta, ref = compat_json(json_name)
    model = build_model(model_cfg_dict(variant, width_keys=width_keys))
    assert_state_dict_matches(model, ref)
    sd = model.state_dict()
    assert next(iter(sd)) == 'global_step' and sd['global_step'].dtype == torch.int64
    assert all(sd[k].dtype == torch.int64 for k in sd if k.endswith('num_batches_tracked'))
    assert _params(model) == meta['total_parameters']
    for name, count in meta['parameters_per_module'].items():
        module = getattr(model, name)
        assert (0 if module is None else _params(module)) == count, name
    assert meta['grid_size'] == model.dataset.grid_size.tolist()


def test_parameter_counts_and_widths():
    counts = {}
    for variant in ('teacher_0075', 'cp_voxel_s', 'cp_voxel_xs', 'cp_voxel_xxs'):
        model = build_model(model_cfg_dict(variant))
        counts[variant] = _params(model)
        bb3d, bb2d = model.backbone_3d, model.backbone_2d
        w3d = {'teacher_0075': 1.0, 'cp_voxel_s': 1.0, 'cp_voxel_xs': 0.75, 'cp_voxel_xxs': 0.5}[variant]
        assert bb3d.num_filters == [int(c * w3d) for c in (16, 16, 32, 64, 128, 128)]
        assert bb3d.num_point_features == int(128 * w3d)
        assert model.map_to_bev_module.num_bev_features == 2 * bb3d.num_point_features
        assert bb2d.num_bev_features == {'teacher_0075': 512, 'cp_voxel_s': 256, 'cp_voxel_xs': 256,
                                         'cp_voxel_xxs': 128}[variant]
        assert model.dense_head.shared_conv[0].in_channels == bb2d.num_bev_features
    assert counts['teacher_0075'] == 8_941_590 and counts['cp_voxel_s'] == 4_343_926
    assert counts['cp_voxel_s'] > counts['cp_voxel_xs'] > counts['cp_voxel_xxs']
    # XS: 3D filters [12,12,24,48,96,96], BEV [64,128]/[128,128] from 192 input channels
    xs = build_model(model_cfg_dict('cp_voxel_xs'))
    assert list(xs.state_dict()['backbone_3d.conv_input.0.weight'].shape) == [12, 3, 3, 3, 5]
    assert list(xs.state_dict()['backbone_2d.blocks.0.1.weight'].shape) == [64, 192, 3, 3]


@pytest.mark.parametrize('section,key,value', [('BACKBONE_3D', 'WIDTH', 0.5),
                                               ('BACKBONE_3D', 'NUM_FILTERS', [8, 8, 16, 32, 64, 64]),
                                               ('BACKBONE_2D', 'WIDTH', 0.5)])
def test_openpcdet_class_names_refuse_width_keys(section, key, value):
    """A config assembled in Python (no schema check on load) is refused when the module is built: OpenPCDet's
    class of the same name would ignore the key and build other shapes."""
    from rdd.config import ConfigError
    cfg = model_cfg_dict('teacher_0075')
    cfg.MODEL[section][key] = value
    with pytest.raises(ConfigError, match=rf'MODEL\.{section}\.{key}.*(VoxelResBackBone8xWidth|BaseBEVBackboneWidth)'):
        build_model(cfg)


def test_model_geometry_formula():
    geo = model_geometry(model_cfg_dict('teacher_0075'))
    assert geo.grid_size.dtype == np.int64 and geo.grid_size.tolist() == [1440, 1440, 40]
    assert geo.point_cloud_range.dtype == np.float32
    assert geo.voxel_size == [0.075, 0.075, 0.2]
    assert geo.point_feature_encoder.num_point_features == 5
    assert geo.class_names[0] == 'car' and len(geo.class_names) == 10 and geo.depth_downsample_factor is None
    assert model_geometry(model_cfg_dict('teacher_01')).grid_size.tolist() == [1024, 1024, 40]
    cfg = model_cfg_dict('teacher_0075', point_cloud_range=[-21.6, -21.6, -5.0, 21.6, 21.6, 3.0])
    assert model_geometry(cfg).grid_size.tolist() == [576, 576, 40]
    model = build_model(cfg)
    assert model.backbone_3d.sparse_shape == [41, 576, 576]


def test_model_geometry_errors_name_the_key():
    cfg = model_cfg_dict('teacher_0075')
    cfg.DATA_CONFIG.DATA_PROCESSOR = [p for p in cfg.DATA_CONFIG.DATA_PROCESSOR
                                      if p.NAME != 'transform_points_to_voxels']
    with pytest.raises(ConfigError, match='transform_points_to_voxels'):
        model_geometry(cfg)
    cfg = model_cfg_dict('teacher_0075')
    del cfg.DATA_CONFIG['POINT_FEATURE_ENCODING']
    with pytest.raises(ConfigError, match='POINT_FEATURE_ENCODING'):
        model_geometry(cfg)


def test_unknown_names_are_errors_listing_known():
    cfg = model_cfg_dict('teacher_0075')
    cfg.MODEL.NAME = 'CenterPiont'
    with pytest.raises(RegistryError, match="MODEL.NAME 'CenterPiont'.*CenterPoint"):
        build_model(cfg)
    cfg = model_cfg_dict('teacher_0075')
    cfg.MODEL.BACKBONE_3D.NAME = 'VoxelBackBone9x'
    with pytest.raises(RegistryError, match="MODEL.BACKBONE_3D.NAME 'VoxelBackBone9x'.*VoxelResBackBone8x"):
        build_model(cfg)
    cfg = model_cfg_dict('teacher_0075')
    cfg.MODEL.ROI_HEAD = {'NAME': 'VoxelRCNNHead'}
    with pytest.raises(ConfigError, match='ROI_HEAD'):
        build_model(cfg)


def test_optional_modules_absent():
    cfg = model_cfg_dict('teacher_0075')
    del cfg.MODEL['DENSE_HEAD']
    model = build_network(cfg.MODEL, 10, model_geometry(cfg))
    assert model.dense_head is None and model.pfe is None and len(model.module_list) == 4
    assert not any(k.startswith('dense_head') for k in model.state_dict())


YAML_CASES = [('cp_voxel_0075.yaml', 'openpcdet_cbgs_voxel0075_res3d_centerpoint.state_dict.json'),
              ('cp_voxel_01.yaml', 'openpcdet_cbgs_voxel01_res3d_centerpoint.state_dict.json'),
              ('cp_voxel_s_0075.yaml', 'openpcdet_cp_voxel_s_0075.state_dict.json'),
              # the grid changes no tensor shape (compat README), so the 0.1 m S student has the same keys/shapes
              ('cp_voxel_s.yaml', 'openpcdet_cp_voxel_s_0075.state_dict.json')]


@needs_compat
@pytest.mark.parametrize('cfg_name,json_name', YAML_CASES)
def test_shipped_configs_build_openpcdet_state_dict(cfg_name, json_name):
    path = REPO / 'configs' / cfg_name
    from rdd.config import cfg_from_yaml_file
    model = build_model(cfg_from_yaml_file(str(path)))
    assert_state_dict_matches(model, compat_json(json_name)[1])


@pytest.mark.parametrize('cfg_name,width,bev', [
    ('cp_voxel_xs.yaml', 0.75, 256), ('cp_voxel_xxs.yaml', 0.5, 128),
    ('cp_voxel_xs_0075.yaml', 0.75, 256), ('cp_voxel_xxs_0075.yaml', 0.5, 128)])
def test_shipped_small_configs(cfg_name, width, bev):
    path = REPO / 'configs' / cfg_name
    from rdd.config import cfg_from_yaml_file
    model = build_model(cfg_from_yaml_file(str(path)))
    assert model.backbone_3d.num_point_features == int(128 * width)
    assert model.backbone_2d.num_bev_features == bev
