"""The registries of :mod:`rdd.models` (one :class:`rdd.registry.Registry` each).

``DETECTORS`` maps ``MODEL.NAME`` to a detector class (or factory) called as ``cls(model_cfg, num_class,
dataset)``; :data:`SECTION_REGISTRIES` maps each module section of a ``MODEL`` (``VFE``, ``BACKBONE_3D``,
``MAP_TO_BEV``, ``BACKBONE_2D``, ``DENSE_HEAD``) to the registry of its ``NAME``. Classes register themselves with
``@REGISTRY.register()`` in their modules; importing :mod:`rdd.models` imports them all. A detector defined in a
higher layer registers when its package is imported (:mod:`rdd.distill` registers ``Distiller``).
"""
from rdd.registry import Registry

__all__ = ['DETECTORS', 'VFES', 'BACKBONES_3D', 'MAP_TO_BEV', 'BACKBONES_2D', 'DENSE_HEADS', 'SECTION_REGISTRIES',
           'OPENPCDET_PLUGIN_NAMES']

DETECTORS = Registry('detector', config_key='MODEL.NAME',
                     hint='detectors outside rdd.models register when their package is imported: '
                          'import rdd.distill for Distiller (rdd.engine, tools/ and rdd.plugin do)')
VFES = Registry('voxel feature encoder', config_key='MODEL.VFE.NAME')
BACKBONES_3D = Registry('3D backbone', config_key='MODEL.BACKBONE_3D.NAME')
MAP_TO_BEV = Registry('map-to-BEV module', config_key='MODEL.MAP_TO_BEV.NAME')
BACKBONES_2D = Registry('2D backbone', config_key='MODEL.BACKBONE_2D.NAME')
DENSE_HEADS = Registry('dense head', config_key='MODEL.DENSE_HEAD.NAME')

#: ``MODEL`` section key -> the registry of its ``NAME``, in OpenPCDet's build order.
SECTION_REGISTRIES = {'VFE': VFES, 'BACKBONE_3D': BACKBONES_3D, 'MAP_TO_BEV': MAP_TO_BEV,
                      'BACKBONE_2D': BACKBONES_2D, 'DENSE_HEAD': DENSE_HEADS}

#: Names rdd registers that OpenPCDet's own registries lack, per ``MODEL`` key: :mod:`rdd.plugin` inserts these
#: classes into pcdet's registries (OpenPCDet without the plugin refuses a config naming them, loudly).
OPENPCDET_PLUGIN_NAMES = {'NAME': ('Distiller',), 'BACKBONE_3D': ('VoxelResBackBone8xWidth',),
                          'BACKBONE_2D': ('BaseBEVBackboneWidth',), 'DENSE_HEAD': ('CenterHeadRDD',)}
