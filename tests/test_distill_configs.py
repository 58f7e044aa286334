"""Every shipped distillation config loads, validates and builds a Distiller (random-weight teachers)."""
import glob
from pathlib import Path

import pytest

from rdd.config import cfg_from_yaml_file
from rdd.distill import Distiller, apply_teacher_ckpt
from rdd.models import build_model, build_network, model_geometry

ROOT = Path(__file__).resolve().parent.parent
KD_CONFIGS = sorted(glob.glob(str(ROOT / 'configs' / 'rdd_*.yaml')) + glob.glob(str(ROOT / 'configs' / 'kd_*.yaml'))
                    + glob.glob(str(ROOT / 'configs' / 'demo' / 'rdd_*.yaml')))


def test_expected_configs_exist():
    names = {Path(c).name for c in KD_CONFIGS}
    assert {'rdd_cp_voxel_s.yaml', 'rdd_cp_voxel_xs.yaml', 'rdd_cp_voxel_xxs.yaml', 'rdd_cp_voxel_s_0075.yaml',
            'rdd_cp_voxel_xs_0075.yaml', 'rdd_cp_voxel_xxs_0075.yaml', 'kd_logit_cp_voxel_s.yaml',
            'kd_fitnet_cp_voxel_s.yaml', 'kd_roi_mimic_cp_voxel_s.yaml', 'kd_label_cp_voxel_s.yaml'} <= names
    baselines = {'fg': 'FGLoss', 'gid_f': 'GIDFeatureLoss', 'gid_l': 'GIDLogitLoss', 'lad': 'LADLoss'}
    for name, loss in baselines.items():
        for size, rdd_base in (('s', 'rdd_cp_voxel_s.yaml'), ('xxs', 'rdd_cp_voxel_xxs.yaml')):
            cfg = cfg_from_yaml_file(ROOT / 'configs' / f'kd_{name}_cp_voxel_{size}.yaml')
            rdd = cfg_from_yaml_file(ROOT / 'configs' / rdd_base)
            assert [e.NAME for e in cfg.MODEL.KD_LOSSES] == [loss]
            for key in ('STUDENT', 'TEACHER', 'TEACHER_CKPT'):  # the harness RDD runs in
                assert cfg.MODEL[key] == rdd.MODEL[key], (name, size, key)
            assert cfg.DATA_CONFIG == rdd.DATA_CONFIG
            opt = cfg.OPTIMIZATION  # the paper's protocol (DESIGN.md 3)
            assert (opt.OPTIMIZER, opt.LR, opt.DIV_FACTOR, opt.PCT_START, opt.NUM_EPOCHS, opt.BATCH_SIZE_PER_GPU,
                    opt.WEIGHT_DECAY) == ('adam_onecycle', 0.001, 10, 0.4, 20, 4, 0.01)
    assert (ROOT / 'configs' / 'demo' / 'rdd_cp_voxel_s.yaml').is_file()


@pytest.mark.parametrize('cfg_file', KD_CONFIGS, ids=lambda p: str(Path(p).relative_to(ROOT / 'configs')))
def test_kd_config_builds(cfg_file, shipped_teacher_ckpts):
    cfg = cfg_from_yaml_file(cfg_file)
    assert cfg.MODEL.NAME == 'Distiller' and cfg.MODEL.TEACHER_CKPT
    apply_teacher_ckpt(cfg, shipped_teacher_ckpts[cfg.MODEL.TEACHER._BASE_CONFIG_])
    d = build_network(cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=model_geometry(cfg))
    assert isinstance(d, Distiller) and len(d.kd_losses) == len(cfg.MODEL.KD_LOSSES)
    plain = build_model(cfg.MODEL.STUDENT)
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == \
        [(k[len('student.'):], v.shape) for k, v in d.state_dict().items() if k.startswith('student.')]


def test_relative_teacher_ckpt_resolves_against_the_config(tmp_path):
    cfg = cfg_from_yaml_file(ROOT / 'configs' / 'rdd_cp_voxel_s.yaml')
    apply_teacher_ckpt(cfg)
    assert cfg.MODEL.TEACHER_CKPT == str(ROOT / 'checkpoints' / 'cbgs_voxel01_res3d_centerpoint.pth')
    cfg = cfg_from_yaml_file(ROOT / 'configs' / 'demo' / 'rdd_cp_voxel_s.yaml')
    apply_teacher_ckpt(cfg)
    assert cfg.MODEL.TEACHER_CKPT == str(ROOT / 'output/demo_results/runs/demo/cp_voxel/demo/ckpt/'
                                              'checkpoint_epoch_9.pth')
    apply_teacher_ckpt(cfg, tmp_path / 't.pth')
    assert cfg.MODEL.TEACHER_CKPT == str(tmp_path / 't.pth')
    plain = cfg_from_yaml_file(ROOT / 'configs' / 'cp_voxel_s.yaml')
    with pytest.raises(ValueError, match='not Distiller'):
        apply_teacher_ckpt(plain, 'x.pth')
