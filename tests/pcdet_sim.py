"""OpenPCDet's client side, simulated for tests (pcdet itself needs CUDA ops and is not installed here).

Each function follows OpenPCDet's code at the commit of ``../shared/compat`` (8cacccec), read for facts:

* :func:`pcdet_cfg_from_yaml_file`: ``pcdet/config.py::cfg_from_yaml_file`` / ``merge_new_config``: a mapping's
  ``_BASE_CONFIG_`` is opened relative to the **working directory**, its raw content copied in (its own nested
  bases are not followed), then the mapping's keys merged on top.
* :func:`pcdet_registries`: pcdet's name -> class dicts, holding stand-ins for OpenPCDet's own classes. A
  stand-in is rdd's class of the same name (same modules, keys and shapes) built from the section **restricted to
  the keys OpenPCDet's constructor reads** (:data:`UPSTREAM_READS`), which is how OpenPCDet treats any other key:
  it ignores it. ``rdd.plugin.register`` is then called on these dicts, as ``import rdd.plugin`` does in pcdet.
* :func:`pcdet_build_network`: ``Detector3DTemplate.build_networks``: modules looked up by NAME in the
  registries (an unknown NAME is a KeyError) and built in pcdet's order with pcdet's constructor arguments.
* :func:`pcdet_load_params`: ``Detector3DTemplate._load_state_dict(strict=False)`` behind
  ``load_params_from_file``: a checkpoint tensor is loaded when its key exists and its shape matches (older spconv
  layouts permuted first); anything else is skipped with a log line, no exception. pcdet prints
  ``==> Done (loaded {loaded}/{total})``.
"""
import copy

import torch
import torch.nn as nn
import yaml
from easydict import EasyDict

# Keys OpenPCDet's constructors read from their MODEL section (pcdet/models/backbones_3d/spconv_backbone.py:
# VoxelResBackBone8x has fixed filters [16, 16, 32, 64, 128, 128] and reads only ``last_pad`` / ``USE_BIAS``;
# backbones_2d/base_bev_backbone.py: the five lists; backbones_2d/map_to_bev/height_compression.py:
# NUM_BEV_FEATURES). MeanVFE reads nothing; CenterHead reads every key rdd's CenterHead reads.
UPSTREAM_READS = {
    'VoxelResBackBone8x': {'NAME', 'last_pad', 'USE_BIAS'},
    'BaseBEVBackbone': {'NAME', 'LAYER_NUMS', 'LAYER_STRIDES', 'NUM_FILTERS', 'UPSAMPLE_STRIDES',
                        'NUM_UPSAMPLE_FILTERS'},
    'HeightCompression': {'NAME', 'NUM_BEV_FEATURES'},
}


def _merge_new_config(config, new_config):
    if '_BASE_CONFIG_' in new_config:
        with open(new_config['_BASE_CONFIG_']) as f:
            config.update(EasyDict(yaml.safe_load(f)))
    for key, val in new_config.items():
        if not isinstance(val, dict):
            config[key] = val
            continue
        config.setdefault(key, EasyDict())
        _merge_new_config(config[key], val)
    return config


def pcdet_cfg_from_yaml_file(path):
    """OpenPCDet's config loading (bases relative to the working directory, one level deep)."""
    with open(path) as f:
        return _merge_new_config(EasyDict(), yaml.safe_load(f))


def _upstream(cls, reads):
    """OpenPCDet's class of ``cls``'s name: ``cls`` built from the keys OpenPCDet reads, the rest ignored."""
    def build(model_cfg, *args, **kwargs):
        return cls(EasyDict({k: copy.deepcopy(v) for k, v in model_cfg.items() if k in reads}), *args, **kwargs)
    return build


def pcdet_registries(with_plugin=True):
    """pcdet's registries with OpenPCDet's own class names; ``with_plugin``: after ``import rdd.plugin``."""
    import rdd.plugin
    from rdd.models.backbones_2d import BaseBEVBackbone, HeightCompression
    from rdd.models.backbones_3d import VoxelResBackBone8x
    from rdd.models.dense_heads import CenterHead
    from rdd.models.vfe import MeanVFE
    regs = {
        'detectors': {'CenterPoint': object},  # pcdet_build_network plays Detector3DTemplate itself
        'vfe': {'MeanVFE': MeanVFE},
        'backbones_3d': {'VoxelResBackBone8x': _upstream(VoxelResBackBone8x, UPSTREAM_READS['VoxelResBackBone8x'])},
        'map_to_bev': {'HeightCompression': _upstream(HeightCompression, UPSTREAM_READS['HeightCompression'])},
        'backbones_2d': {'BaseBEVBackbone': _upstream(BaseBEVBackbone, UPSTREAM_READS['BaseBEVBackbone'])},
        'dense_heads': {'CenterHead': CenterHead},
    }
    if with_plugin:
        rdd.plugin.register(regs)
    return regs


class PcdetDetector(nn.Module):
    """The module layout of pcdet's Detector3DTemplate: ``global_step`` first, then the modules in topology
    order (so state_dict keys come in pcdet's order)."""

    def __init__(self):
        super().__init__()
        self.register_buffer('global_step', torch.LongTensor(1).zero_())


def pcdet_build_network(model_cfg, num_class, dataset, registries):
    """``build_network`` as Detector3DTemplate.build_networks does it for CenterPoint (VFE, 3D backbone,
    map-to-BEV, 2D backbone, dense head); a NAME missing from ``registries`` raises KeyError."""
    model = PcdetDetector()
    num_point_features = dataset.point_feature_encoder.num_point_features
    geometry = dict(grid_size=dataset.grid_size, voxel_size=dataset.voxel_size,
                    point_cloud_range=dataset.point_cloud_range)
    vfe = registries['vfe'][model_cfg.VFE.NAME](model_cfg=model_cfg.VFE, num_point_features=num_point_features,
                                                depth_downsample_factor=None, **geometry)
    bb3d = registries['backbones_3d'][model_cfg.BACKBONE_3D.NAME](
        model_cfg=model_cfg.BACKBONE_3D, input_channels=vfe.get_output_feature_dim(), **geometry)
    to_bev = registries['map_to_bev'][model_cfg.MAP_TO_BEV.NAME](model_cfg=model_cfg.MAP_TO_BEV,
                                                                 grid_size=dataset.grid_size)
    bb2d = registries['backbones_2d'][model_cfg.BACKBONE_2D.NAME](model_cfg=model_cfg.BACKBONE_2D,
                                                                  input_channels=to_bev.num_bev_features)
    head = registries['dense_heads'][model_cfg.DENSE_HEAD.NAME](
        model_cfg=model_cfg.DENSE_HEAD, input_channels=bb2d.num_bev_features, num_class=num_class,
        class_names=dataset.class_names, predict_boxes_when_training=False, **geometry)
    for name, module in (('vfe', vfe), ('backbone_3d', bb3d), ('map_to_bev_module', to_bev), ('pfe', None),
                         ('backbone_2d', bb2d), ('dense_head', head), ('point_head', None), ('roi_head', None)):
        model.add_module(name, module)
    return model


def pcdet_load_params(model, model_state):
    """OpenPCDet's non-strict load: ``(loaded keys, total keys, keys of the model not updated)``."""
    from rdd.models.checkpoint import adapt_spconv_weight, spconv_weight_keys
    state = model.state_dict()
    spconv_keys = spconv_weight_keys(model)
    update = {}
    for key, val in model_state.items():
        if key in spconv_keys and key in state and state[key].shape != val.shape:
            val = adapt_spconv_weight(val, state[key].shape)
        if key in state and state[key].shape == val.shape:
            update[key] = val
    state.update(update)
    model.load_state_dict(state)
    return len(update), len(state), [k for k in state if k not in update]
