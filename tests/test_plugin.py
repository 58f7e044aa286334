"""rdd.plugin: registration into pcdet-style registries (plain dicts; pcdet is not installed here)."""
import importlib.util

import pytest

import rdd.plugin as plugin
from pcdet_sim import pcdet_cfg_from_yaml_file
from rdd.distill import Distiller
from rdd.models.backbones_2d import BaseBEVBackboneWidth
from rdd.models.backbones_3d import VoxelResBackBone8xWidth


def _registries():
    class PcdetCenterPoint:  # stands in for pcdet's own classes
        pass
    return {'detectors': {'CenterPoint': PcdetCenterPoint}, 'backbones_3d': {'VoxelResBackBone8x': object},
            'backbones_2d': {}, 'dense_heads': {}}


def test_register_inserts_and_keeps_pcdet_classes():
    regs = _registries()
    keep = regs['detectors']['CenterPoint']
    inserted = plugin.register(regs)
    assert regs['detectors']['Distiller'].__self__ is Distiller and regs['detectors']['CenterPoint'] is keep
    assert regs['backbones_3d']['VoxelResBackBone8xWidth'] is VoxelResBackBone8xWidth
    assert regs['backbones_3d']['VoxelResBackBone8x'] is object
    assert regs['backbones_2d']['BaseBEVBackboneWidth'] is BaseBEVBackboneWidth and 'CenterHeadRDD' in regs['dense_heads']
    assert inserted['detectors'] == ['Distiller']
    assert plugin.register(regs) == {k: [] for k in inserted}  # idempotent


def test_register_refuses_to_overwrite_and_changes_nothing():
    regs = _registries()
    regs['dense_heads']['CenterHeadRDD'] = object
    with pytest.raises(plugin.PluginConflictError, match="dense_heads\\['CenterHeadRDD'\\]"):
        plugin.register(regs)
    assert 'Distiller' not in regs['detectors']  # checked before inserting anything


def test_kd_losses_registry_optional():
    regs = _registries()
    regs['kd_losses'] = {}
    plugin.register(regs)
    assert {'RDDLoss', 'LogitKDLoss', 'FitNetLoss', 'RoIMimicLoss', 'LabelKDLoss'} <= set(regs['kd_losses'])


def test_import_without_pcdet_is_a_noop():
    if importlib.util.find_spec('pcdet') is None:
        assert plugin.REGISTERED is None
    else:
        assert plugin.REGISTERED is not None


def test_plugin_names_are_rdd_names_too():
    """The names the plugin gives pcdet build the same classes in rdd, without importing the plugin."""
    from rdd.models.registries import BACKBONES_2D, BACKBONES_3D, DENSE_HEADS
    from rdd.models.dense_heads import CenterHead
    entries = plugin.plugin_entries()
    for reg_name, registry in (('backbones_3d', BACKBONES_3D), ('backbones_2d', BACKBONES_2D),
                               ('dense_heads', DENSE_HEADS)):
        for name, cls in entries[reg_name].items():
            assert registry.get(name) is cls, (reg_name, name)
    assert DENSE_HEADS.get('CenterHeadRDD') is CenterHead
    assert BACKBONES_3D.get('VoxelResBackBone8x') is not VoxelResBackBone8xWidth


def test_distiller_builds_from_a_pcdet_loaded_config(tmp_path, monkeypatch):
    """The KD config as OpenPCDet's tools load it (paths relative to the CWD, nested bases left unresolved)."""
    import torch
    from pathlib import Path

    from rdd.config import cfg_from_yaml_file
    from rdd.models import build_model, build_network
    from test_distill_helpers import write_teacher_ckpt
    root = Path(__file__).resolve().parent.parent
    ckpt = tmp_path / 'teacher.pth'
    write_teacher_ckpt(ckpt)
    kd = tmp_path / 'kd.yaml'
    kd.write_text(f"""CLASS_NAMES: ['car','truck', 'construction_vehicle', 'bus', 'trailer',
              'barrier', 'motorcycle', 'bicycle', 'pedestrian', 'traffic_cone']
DATA_CONFIG:
    _BASE_CONFIG_: tests/configs/tiny_dataset.yaml
MODEL:
    NAME: Distiller
    STUDENT: {{_BASE_CONFIG_: tests/configs/tiny_student.yaml}}
    TEACHER: {{_BASE_CONFIG_: tests/configs/tiny_teacher.yaml}}
    TEACHER_CKPT: {ckpt}
    KD_LOSSES: [{{NAME: FitNetLoss}}]
""")
    monkeypatch.chdir(root)
    cfg = pcdet_cfg_from_yaml_file(kd)
    assert 'MODEL' in cfg.MODEL.STUDENT and 'VFE' not in cfg.MODEL.STUDENT.MODEL  # pcdet left the base unresolved
    from rdd.models import model_geometry
    geom = model_geometry(cfg_from_yaml_file(root / 'tests' / 'configs' / 'tiny_student.yaml'))
    d = build_network(cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=geom)
    ref = build_model(cfg_from_yaml_file(root / 'tests' / 'configs' / 'tiny_student.yaml'))
    assert {k: v.shape for k, v in ref.state_dict().items()} == \
        {k[len('student.'):]: v.shape for k, v in d.state_dict().items() if k.startswith('student.')}
    assert torch.equal(next(iter(d.teacher.state_dict().values())), torch.load(ckpt)['model_state']['global_step'])


@pytest.mark.parametrize('name', ['rdd_cp_voxel_s.yaml', 'rdd_cp_voxel_xs.yaml', 'rdd_cp_voxel_xxs.yaml',
                                  'rdd_cp_voxel_s_0075.yaml', 'kd_logit_rdd_cp_voxel_s.yaml'])
def test_shipped_kd_configs_build_through_the_plugin(name, shipped_teacher_ckpts, monkeypatch):
    """The paper-protocol and stronger-teacher KD configs as OpenPCDet loads them (working directory = the configs'
    folder, bases one level deep) build a Distiller through the registries ``import rdd.plugin`` fills, with the
    student rdd builds from the same file and RDD at its paper defaults."""
    from pathlib import Path

    from pcdet_sim import pcdet_registries
    from rdd.config import cfg_from_yaml_file
    from rdd.config_schema import parse_section
    from rdd.distill.rdd import RDDConfig, RDDLoss
    from rdd.models import build_model, model_geometry
    configs = Path(__file__).resolve().parent.parent / 'configs'
    ours = cfg_from_yaml_file(configs / name)
    monkeypatch.chdir(configs)
    cfg = pcdet_cfg_from_yaml_file(name)
    cfg.MODEL.TEACHER_CKPT = str(shipped_teacher_ckpts[ours.MODEL.TEACHER._BASE_CONFIG_])
    distiller_cls = pcdet_registries(with_plugin=True)['detectors']['Distiller']
    d = distiller_cls(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=model_geometry(ours))
    assert [(k, v.shape) for k, v in build_model(ours.MODEL.STUDENT).state_dict().items()] == \
        [(k[len('student.'):], v.shape) for k, v in d.state_dict().items() if k.startswith('student.')]
    rdd = [m for m in d.kd_losses.values() if isinstance(m, RDDLoss)]
    assert len(rdd) == 1 and rdd[0].cfg == RDDConfig() == parse_section(RDDConfig, {}, 'RDDLoss')
    from rdd.distill.context import ModelFacts
    assert ModelFacts.from_model(d.teacher).grid.same_as(ModelFacts.from_model(d.student).grid)
