"""An exported student loads completely in OpenPCDet, or not at all (issue: 487/558 half-loads, no error).

OpenPCDet's loading, registries, network building and non-strict checkpoint loading are simulated in
``pcdet_sim.py`` (facts from OpenPCDet's code, cited there); rdd's side is the real code: the shipped configs,
``tools/export_student.py`` / :mod:`rdd.engine.export` and :mod:`rdd.plugin`.
"""
import os
from pathlib import Path

import pytest
import torch

from pcdet_sim import pcdet_build_network, pcdet_cfg_from_yaml_file, pcdet_load_params, pcdet_registries
from reference_utils import COMPAT
from rdd.config import ConfigError, cfg_from_yaml_file
from rdd.engine.export import export_student
from rdd.models import build_model, model_geometry
from rdd.models.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / 'configs'
KEYS = 558  # OpenPCDet's CenterPoint-Voxel state_dict, global_step included (compat README)


def _distiller_ckpt(path, student_state):
    """A Distiller checkpoint holding ``student_state`` (and an adapter of a KD loss, which export drops)."""
    state = {f'student.{k}': v for k, v in student_state.items()}
    state['kd_losses.RDDLoss.psi.conv.weight'] = torch.ones(2, 2, 1, 1)
    torch.save({'model_state': state, 'optimizer_state': None, 'epoch': 20, 'it': 123, 'version': 'rdd+test'}, path)
    return path


def _kd_config(tmp_path, student_file):
    """The shipped RDD config of the student's grid with another student (as configs/rdd_cp_voxel_xs.yaml does)."""
    path = tmp_path / 'kd.yaml'
    base = 'rdd_cp_voxel_s_0075.yaml' if str(student_file).endswith('_0075.yaml') else 'rdd_cp_voxel_s.yaml'
    path.write_text(f'_BASE_CONFIG_: {CONFIGS / base}\n'
                    f'MODEL:\n    STUDENT: {{_BASE_CONFIG_: {CONFIGS / student_file}}}\n')
    return path


def _has_base_key(node):
    if isinstance(node, dict):
        return '_BASE_CONFIG_' in node or any(_has_base_key(v) for v in node.values())
    return isinstance(node, list) and any(_has_base_key(v) for v in node)


def _load_in_pcdet(cfg_file, ckpt_file, with_plugin=True):
    """OpenPCDet's test.py path: config from a foreign working directory, build_network, load_params_from_file."""
    cfg = pcdet_cfg_from_yaml_file(cfg_file)
    model = pcdet_build_network(cfg.MODEL, len(cfg.CLASS_NAMES), model_geometry(cfg), pcdet_registries(with_plugin))
    state = torch.load(ckpt_file, map_location='cpu', weights_only=True)['model_state']
    return cfg, model, state, pcdet_load_params(model, state)


@pytest.mark.parametrize('student_file,plugin_name', [
    ('cp_voxel_s.yaml', None), ('cp_voxel_xs.yaml', 'VoxelResBackBone8xWidth'),
    ('cp_voxel_xxs_0075.yaml', 'VoxelResBackBone8xWidth')])
def test_exported_student_loads_558_of_558_in_openpcdet(tmp_path, monkeypatch, student_file, plugin_name):
    student_cfg = cfg_from_yaml_file(CONFIGS / student_file)
    torch.manual_seed(0)
    trained = build_model(student_cfg).state_dict()
    ckpt = _distiller_ckpt(tmp_path / 'kd_epoch_20.pth', trained)
    out = export_student(_kd_config(tmp_path, student_file), ckpt, tmp_path / 'export' / 'student.pth')
    assert (out.num_keys, out.needs_plugin) == (KEYS, plugin_name is not None)
    assert Path(out.config) == tmp_path / 'export' / 'student.yaml'
    assert sorted(os.listdir(tmp_path / 'export')) == ['student.pth', 'student.yaml']  # no temporary left

    monkeypatch.chdir(tmp_path)  # any working directory: nothing in the flattened config is relative
    cfg, model, state, (loaded, total, not_updated) = _load_in_pcdet(out.config, out.checkpoint)
    assert not _has_base_key(cfg) and 'ROOT_DIR' not in cfg and Path(cfg.DATA_CONFIG.DATA_PATH).is_absolute()
    assert (loaded, total, not_updated) == (KEYS, KEYS, [])
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    # the flattened config is the student's config, values resolved (only bookkeeping keys and bases dropped)
    assert cfg.MODEL == {k: v for k, v in _without_bases(student_cfg.MODEL).items()}
    assert cfg.OPTIMIZATION == student_cfg.OPTIMIZATION and cfg.CLASS_NAMES == student_cfg.CLASS_NAMES
    if plugin_name:  # OpenPCDet without `import rdd.plugin` refuses the config loudly instead of building others
        with pytest.raises(KeyError, match=plugin_name):
            _load_in_pcdet(out.config, out.checkpoint, with_plugin=False)
    # rdd's own tools read the same pair (tools/test.py --cfg student.yaml --ckpt student.pth)
    build_model(cfg_from_yaml_file(out.config)).load_params_from_file(out.checkpoint, strict=True)


def _without_bases(node):
    if isinstance(node, dict):
        return {k: _without_bases(v) for k, v in node.items() if k != '_BASE_CONFIG_'}
    return node


@pytest.mark.skipif(not (COMPAT / 'openpcdet_cp_voxel_s_0075.random.pth').is_file(),
                    reason=f'reference checkpoint absent: {COMPAT}')
def test_openpcdets_own_s_checkpoint_round_trips_through_export(tmp_path):
    """OpenPCDet's own random CP-Voxel-S checkpoint (0.075 m grid), wrapped as a Distiller checkpoint of
    configs/rdd_cp_voxel_s_0075.yaml, exports to a pair that OpenPCDet loads 558/558 with the same tensors."""
    ref = torch.load(COMPAT / 'openpcdet_cp_voxel_s_0075.random.pth', map_location='cpu', weights_only=True)
    ckpt = _distiller_ckpt(tmp_path / 'kd.pth', ref['model_state'])
    out = export_student(CONFIGS / 'rdd_cp_voxel_s_0075.yaml', ckpt, tmp_path / 'cp_voxel_s_0075_rdd.pth')
    cfg, model, _, (loaded, total, _) = _load_in_pcdet(out.config, out.checkpoint)
    assert (loaded, total) == (KEYS, KEYS) and not out.needs_plugin
    assert cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE == [0.075, 0.075, 0.2]
    assert sum(p.numel() for p in model.parameters()) == 4_343_926
    for key, value in ref['model_state'].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_config_that_would_half_load_is_refused(tmp_path):
    """Today's failure: WIDTH on OpenPCDet's BaseBEVBackbone. OpenPCDet builds the full-width backbone and loads
    487/558 tensors without an error (reproduced below); rdd refuses such a config wherever it meets it."""
    old_s = tmp_path / 'cp_voxel_s_width.yaml'  # the CP-Voxel-S config as it was written before
    old_s.write_text(f'_BASE_CONFIG_: {CONFIGS / "cp_voxel_0075.yaml"}\n'
                     'MODEL:\n    BACKBONE_2D:\n        WIDTH: 0.5\n    DENSE_HEAD:\n        SHARED_CONV_CHANNEL: 32\n')
    student = build_model(cfg_from_yaml_file(CONFIGS / 'cp_voxel_s_0075.yaml')).state_dict()
    torch.save({'model_state': student}, tmp_path / 's.pth')
    flat = tmp_path / 'flat_width.yaml'  # what a flattening without the check would give OpenPCDet
    import yaml
    from rdd.config import load_config_with_origin
    from rdd.engine.export import flat_config_dict
    raw, _ = load_config_with_origin(old_s)  # merged, not validated
    flat.write_text(yaml.safe_dump(flat_config_dict(raw)))
    _, _, _, (loaded, total, not_updated) = _load_in_pcdet(flat, tmp_path / 's.pth')
    assert (loaded, total) == (487, KEYS)
    assert all(k.startswith('backbone_2d.') for k in not_updated if k != 'dense_head.shared_conv.0.weight')
    assert len(not_updated) == 71 and 'dense_head.shared_conv.0.weight' in not_updated

    with pytest.raises(ConfigError, match=r'cp_voxel_s_width\.yaml.*MODEL\.BACKBONE_2D\.WIDTH.*'
                                          r'NUM_FILTERS: \[64, 128\], NUM_UPSAMPLE_FILTERS: \[128, 128\]'):
        cfg_from_yaml_file(old_s)
    ckpt = _distiller_ckpt(tmp_path / 'kd.pth', student)
    with pytest.raises(ConfigError, match='WIDTH'):
        export_student(_kd_config(tmp_path, old_s), ckpt, tmp_path / 'out' / 'student.pth')
    assert not (tmp_path / 'out').exists() or os.listdir(tmp_path / 'out') == []


def test_export_refuses_a_checkpoint_of_another_student_and_writes_nothing(tmp_path):
    xs_state = build_model(cfg_from_yaml_file(CONFIGS / 'cp_voxel_xs_0075.yaml')).state_dict()
    ckpt = _distiller_ckpt(tmp_path / 'kd.pth', xs_state)
    with pytest.raises(CheckpointError, match=r'student of .*kd\.pth does not fit MODEL\.STUDENT of '
                                              r'.*rdd_cp_voxel_s\.yaml(.|\n)*backbone_3d\.conv_input\.0\.weight'):
        export_student(CONFIGS / 'rdd_cp_voxel_s.yaml', ckpt, tmp_path / 'out' / 'student.pth')
    assert os.listdir(tmp_path / 'out') == []  # neither the checkpoint, nor the config, nor a temporary
    with pytest.raises(ValueError, match='expected a Distiller config'):
        export_student(CONFIGS / 'cp_voxel_s.yaml', ckpt, tmp_path / 'out' / 'student.pth')
