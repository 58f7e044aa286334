"""Distiller: frozen teacher, gradient flow, state_dict/export, label-rewrite hazard, bad input (tiny CPU configs)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rdd.config import cfg_from_yaml_file
from rdd.distill import student_state_from_distiller
from rdd.errors import KDConfigError, TeacherCheckpointError
from rdd.models import build_model
from rdd.errors import CheckpointError
from test_distill_helpers import (STUDENT_CFG, TEACHER_CFG, build_distiller, kd_cfg, make_batch,
                                  write_teacher_ckpt)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    state = write_teacher_ckpt(path)
    return path, state


def _step(d, batch, lr=1e-2):
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=lr)
    d.train()
    ret, tb, _ = d(batch)
    opt.zero_grad()
    ret['loss'].backward()
    opt.step()
    return ret, tb


@pytest.mark.parametrize('bn_mode', ['eval', 'batch'])
def test_teacher_bit_identical_after_step(teacher_ckpt, bn_mode):
    path, state = teacher_ckpt
    cfg = kd_cfg(path, TEACHER_BN=bn_mode)
    d = build_distiller(cfg)
    before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    for k, v in state.items():  # loaded strictly from the checkpoint
        assert torch.equal(before[k], v), k
    _step(d, make_batch(cfg))
    after = d.teacher.state_dict()
    assert set(after) == set(before)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert all(not p.requires_grad and p.grad is None for p in d.teacher.parameters())


def test_teacher_mode_and_bn(teacher_ckpt):
    path, _ = teacher_ckpt
    d = build_distiller(kd_cfg(path, TEACHER_BN='batch'))
    d.train()
    assert d.student.training and not d.teacher.training and not d.teacher.dense_head.training
    bns = [m for m in d.teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.training and not m.track_running_stats for m in bns)
    d.eval()
    assert not d.student.training and all(m.training for m in bns)  # BN mode is kept whatever .eval() does
    with pytest.raises(KDConfigError, match='TEACHER_BN'):
        build_distiller(kd_cfg(path, TEACHER_BN='train'))


def test_gradients_reach_student_and_kd_params_only(teacher_ckpt):
    path, _ = teacher_ckpt
    cfg = kd_cfg(path)
    d = build_distiller(cfg)
    d.train()
    ret, tb, _ = d(make_batch(cfg))
    ret['loss'].backward()
    teacher_ids = {id(p) for p in d.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in d.parameters()}
    names = [n for n, _ in d.named_parameters()]
    assert all(n.startswith(('student.', 'kd_losses.')) for n in names)
    missing = [n for n, p in d.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    kd = {n: p for n, p in d.named_parameters() if n.startswith('kd_losses.')}
    assert any('adapter' in n for n in kd) and any('psi' in n for n in kd)
    for n, p in kd.items():
        if 'adapter.weight' in n or 'psi.' in n:
            assert p.grad.abs().sum() > 0, n
    for key in ('loss_det', 'loss_kd', 'kd/RDDLoss', 'kd/LogitKDLoss', 'kd/FitNetLoss', 'kd/RoIMimicLoss',
                'kd/RDDLoss/rdd_feat', 'kd/RDDLoss/rdd_logit', 'kd/RDDLoss/rdd_pairs', 'kd/RDDLoss/rdd_kept_fraction'):
        assert key in tb, key
    expected = tb['loss_det'] + sum(tb[f'kd/{n}'] for n in ('RDDLoss', 'LogitKDLoss', 'FitNetLoss', 'RoIMimicLoss'))
    assert tb['loss'] == pytest.approx(expected, rel=1e-5)


def test_to_moves_teacher_and_state_dict_excludes_it(teacher_ckpt):
    path, _ = teacher_ckpt
    d = build_distiller(kd_cfg(path))
    sd = d.state_dict()
    assert sd and all(k.startswith(('student.', 'kd_losses.')) for k in sd)
    assert not any('teacher' in k for k in sd)
    assert len([k for k in sd if k.startswith('student.')]) == len(d.student.state_dict())
    d.double()
    assert next(d.teacher.parameters()).dtype == torch.float64
    assert next(d.student.parameters()).dtype == torch.float64
    d.float()
    assert next(d.teacher.parameters()).dtype == torch.float32


def test_label_rewrite_hazard(teacher_ckpt, monkeypatch):
    """The teacher's forward may rewrite labels in its gt_boxes (OpenPCDet's CenterHead target assignment does);
    neither the caller's batch nor the student's targets may change."""
    path, _ = teacher_ckpt
    cfg = kd_cfg(path, losses=[{'NAME': 'LogitKDLoss'}])
    d = build_distiller(cfg)
    batch = make_batch(cfg)
    gt_before = batch['gt_boxes'].clone()
    vfe = d.inference_teacher.vfe  # the model the teacher forward runs (the BN-folded copy)
    orig = vfe.forward

    def rewriting_forward(data_dict):
        data_dict['gt_boxes'][..., -1] = 1.0  # an in-place label rewrite inside the teacher's forward
        return orig(data_dict)
    monkeypatch.setattr(vfe, 'forward', rewriting_forward)
    d.train()
    assert d.forward_teacher(batch)['boxes'] is None  # logit KD needs no decoded boxes
    d(batch)
    assert torch.equal(batch['gt_boxes'], gt_before)
    kd_targets = d.student.dense_head.forward_ret_dict['target_dicts']
    plain = build_model(cfg_from_yaml_file(STUDENT_CFG))
    plain.load_state_dict(d.student.state_dict())
    plain.train()
    plain(dict(make_batch(cfg)))
    ref = plain.dense_head.forward_ret_dict['target_dicts']
    for key in ('heatmaps', 'target_boxes', 'inds', 'masks'):
        for a, b in zip(kd_targets[key], ref[key]):
            assert torch.equal(a, b), key


def test_export_student_loads_strictly(teacher_ckpt, tmp_path):
    path, _ = teacher_ckpt
    cfg = kd_cfg(path)
    d = build_distiller(cfg)
    _step(d, make_batch(cfg))
    ckpt = tmp_path / 'kd.pth'
    torch.save({'model_state': d.state_dict(), 'optimizer_state': None, 'epoch': 3, 'it': 7, 'version': 'x'}, ckpt)
    # resume into a fresh Distiller
    d2 = build_distiller(cfg, seed=5)
    it, epoch = d2.load_params_with_optimizer(str(ckpt))
    assert (it, epoch) == (7, 3)
    for k, v in d.state_dict().items():
        assert torch.equal(v, d2.state_dict()[k]), k
    # export through the CLI (the KD config file needs TEACHER_CKPT only to build a Distiller; export does not)
    out = tmp_path / 'student.pth'
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'export_student.py'), '--cfg',
                          str(ROOT / 'tests' / 'configs' / 'tiny_kd.yaml'), '--ckpt', str(ckpt), '--out', str(out)],
                         capture_output=True, text=True, cwd=str(ROOT))
    assert res.returncode == 0, res.stderr
    saved = torch.load(out, map_location='cpu', weights_only=True)
    assert set(saved) == {'model_state', 'epoch', 'it', 'version'} and saved['epoch'] == 3
    plain = build_model(cfg_from_yaml_file(STUDENT_CFG))
    plain.load_params_from_file(str(out), strict=True)
    for k, v in d.student.state_dict().items():
        assert torch.equal(v, plain.state_dict()[k]), k
    # a Distiller checkpoint is refused by a plain student, and teacher keys are refused by the exporter
    with pytest.raises(CheckpointError):
        plain.load_params_from_file(str(ckpt), strict=True)
    bad = dict(d.state_dict())
    bad['teacher.vfe.x'] = torch.zeros(1)
    with pytest.raises(KeyError, match='teacher'):
        student_state_from_distiller(bad)


def test_pretrained_student_checkpoint_loads_into_student(teacher_ckpt, tmp_path):
    path, _ = teacher_ckpt
    d = build_distiller(kd_cfg(path))
    plain = build_model(cfg_from_yaml_file(STUDENT_CFG))
    f = tmp_path / 'plain.pth'
    torch.save({'model_state': plain.state_dict()}, f)
    d.load_params_from_file(str(f))
    for k, v in plain.state_dict().items():
        assert torch.equal(v, d.student.state_dict()[k])


# ---------------------------------------------------------------------------------------------- bad input
def test_missing_teacher_ckpt(teacher_ckpt, tmp_path):
    with pytest.raises(TeacherCheckpointError, match='TEACHER_CKPT is not set'):
        build_distiller(kd_cfg(None))
    with pytest.raises(TeacherCheckpointError, match='not found'):
        build_distiller(kd_cfg(tmp_path / 'nope.pth'))


def test_teacher_ckpt_of_other_architecture(tmp_path):
    wrong = tmp_path / 'student_as_teacher.pth'
    write_teacher_ckpt(wrong, cfg_file=STUDENT_CFG)
    with pytest.raises(TeacherCheckpointError, match='mis-shaped') as err:
        build_distiller(kd_cfg(wrong))
    assert 'backbone_2d' in str(err.value)


def test_teacher_of_other_class_list(teacher_ckpt, tmp_path):
    path, _ = teacher_ckpt
    cfg = kd_cfg(path)
    cfg.MODEL.TEACHER.CLASS_NAMES = ['car', 'pedestrian']
    with pytest.raises(KDConfigError, match='CLASS_NAMES'):
        build_distiller(cfg)
    # a checkpoint trained on another class list: head heatmap shapes differ
    tcfg = cfg_from_yaml_file(TEACHER_CFG)
    tcfg.CLASS_NAMES = ['car', 'pedestrian']
    tcfg.MODEL.DENSE_HEAD.CLASS_NAMES_EACH_HEAD = [['car'], ['pedestrian']]
    other = tmp_path / 'two_class.pth'
    torch.save({'model_state': build_model(tcfg).state_dict()}, other)
    with pytest.raises(TeacherCheckpointError, match='class list'):
        build_distiller(kd_cfg(other))


def test_kd_config_errors_name_the_key(teacher_ckpt):
    path, _ = teacher_ckpt
    with pytest.raises(KDConfigError, match="'bev_mystery'"):
        build_distiller(kd_cfg(path, losses=[{'NAME': 'FitNetLoss', 'FEATURE_KEY': 'bev_mystery'}]))
    with pytest.raises(KDConfigError, match='ADAPTER.STUDENT_CHANNELS'):
        build_distiller(kd_cfg(path, losses=[{'NAME': 'FitNetLoss', 'ADAPTER': {'STUDENT_CHANNELS': 999}}]))
    with pytest.raises(KDConfigError, match="'NoSuchLoss'"):
        build_distiller(kd_cfg(path, losses=[{'NAME': 'NoSuchLoss'}]))
    with pytest.raises(KDConfigError, match='GRID_SIZ'):
        build_distiller(kd_cfg(path, losses=[{'NAME': 'RoIMimicLoss', 'GRID_SIZ': 7}]))
    with pytest.raises(KDConfigError, match='RDDLoss'):
        build_distiller(kd_cfg(path, losses=[{'NAME': 'RDDLoss', 'GAMA': 0.6}]))
    with pytest.raises(KDConfigError, match='GRID_MISMATCH'):
        build_distiller(kd_cfg(path, GRID_MISMATCH='nearest'))


def test_zero_proposals_and_no_gt_give_zero_not_nan(teacher_ckpt):
    path, _ = teacher_ckpt
    cfg = kd_cfg(path, losses=[{'NAME': 'RDDLoss', 'PROPOSAL': {'SCORE_THRESH': 1.01}},
                               {'NAME': 'RoIMimicLoss'}, {'NAME': 'LogitKDLoss'}, {'NAME': 'FGLoss'},
                               {'NAME': 'LADLoss'}, {'NAME': 'GIDLogitLoss', 'GISM': {'SCORE_THRESH': 0.999}}])
    d = build_distiller(cfg)
    d.train()
    batch = make_batch(cfg, num_boxes=0)
    ret, tb, _ = d(batch)
    assert tb['kd/RDDLoss'] == 0.0 and tb['kd/RoIMimicLoss'] == 0.0 and tb['kd/FGLoss'] == 0.0
    assert tb['kd/LADLoss'] == 0.0 and tb['kd/GIDLogitLoss'] == 0.0 and tb['kd/GIDLogitLoss/gid_instances'] == 0.0
    assert torch.isfinite(ret['loss'])
    ret['loss'].backward()
    grads = {n: p.grad for n, p in d.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None or not torch.isfinite(g).all()][:5]
    assert any(float(g.abs().sum()) > 0 for n, g in grads.items() if n.startswith('student.'))  # detection loss


def _coarse_student_cfg(path, mode, losses=None):
    cfg = kd_cfg(path, losses=losses, GRID_MISMATCH=mode)
    for data_cfg in (cfg.DATA_CONFIG, cfg.MODEL.STUDENT.DATA_CONFIG):
        data_cfg.DATA_PROCESSOR[-1].VOXEL_SIZE = [0.4, 0.4, 0.2]
    return cfg


def test_grid_mismatch_resample_or_error(teacher_ckpt):
    path, _ = teacher_ckpt
    with pytest.raises(KDConfigError, match='grids differ'):
        build_distiller(_coarse_student_cfg(path, 'error', losses=[{'NAME': 'FitNetLoss'}]))
    cfg = _coarse_student_cfg(path, 'resample')
    d = build_distiller(cfg)
    assert d.teacher_voxelizer is not None
    d.train()
    batch = make_batch(cfg)
    teacher_out = d.forward_teacher(batch)
    assert teacher_out['spatial_features_2d'].shape[-2:] == (16, 16)
    ret, tb, _ = d(batch)
    assert torch.isfinite(ret['loss'])
    for key in ('kd/RDDLoss', 'kd/LogitKDLoss', 'kd/FitNetLoss', 'kd/RoIMimicLoss'):
        assert tb[key] > 0, key
    ret['loss'].backward()
    # the student's data grid must match its own config's grid
    cfg.MODEL.STUDENT.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE = [0.2, 0.2, 0.2]
    with pytest.raises(KDConfigError, match='MODEL.STUDENT.DATA_CONFIG'):
        build_distiller(cfg)


def test_eval_forward_is_students(teacher_ckpt):
    path, _ = teacher_ckpt
    cfg = kd_cfg(path)
    d = build_distiller(cfg)
    d.eval()
    batch = make_batch(cfg)
    with torch.no_grad():
        preds, _ = d(dict(batch))
        ref, _ = d.student(dict(batch))
    for a, b in zip(preds, ref):
        assert torch.equal(a['pred_boxes'], b['pred_boxes'])
