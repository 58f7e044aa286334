"""The Distiller's cheaper teacher (TEACHER_BN: eval): BatchNorm folded once at construction, forward under
inference mode; same tapped outputs and the same student gradients as the teacher itself, up to float rounding.
TEACHER_BN: batch keeps the teacher itself; MODEL.TEACHER_PRECISION is checked (tiny CPU configs)."""
import pytest
import torch

from rdd.config import cfg_from_yaml_file
from rdd.distill import Distiller
from rdd.distill.feature_taps import decode_boxes, raw_head_maps
from rdd.errors import KDConfigError
from rdd.models import build_model
from rdd.models.fold_bn import count_batchnorms
from test_distill_helpers import TEACHER_CFG, build_distiller, kd_cfg, make_batch

PAPER_RDD = {'NAME': 'RDDLoss', 'WEIGHT': 1.0}  # DESIGN.md 4.1 defaults
LOGIT = {'NAME': 'LogitKDLoss', 'WEIGHT': 1.0}
FITNET = {'NAME': 'FitNetLoss', 'WEIGHT': 1.0}  # taps spatial_features_2d
BOXES = {'NAME': 'LabelKDLoss', 'WEIGHT': 1.0, 'SCORE_THRESH': 0.0}  # needs the teacher's decoded boxes


@pytest.fixture(scope='module')
def bn_teacher_ckpt(tmp_path_factory):
    """Random teacher whose every BatchNorm has non-trivial running mean / var, weight and bias (folding them
    into the convolutions then changes every weight; with the defaults 0 / 1 / 1 / 0 it would change nothing)."""
    torch.manual_seed(0)
    teacher = build_model(cfg_from_yaml_file(TEACHER_CFG))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    path = tmp_path_factory.mktemp('bn_teacher') / 'teacher.pth'
    torch.save({'model_state': teacher.state_dict()}, path)
    return path


def _plain_teacher_outputs(d, batch):
    """What the KD losses read, computed here on the unfolded teacher ``d.teacher`` under no_grad."""
    teacher, tbatch = d.teacher, dict(batch)
    with torch.no_grad():
        if d.teacher_voxelizer is not None:
            d.teacher_voxelizer(tbatch, training=True)
        for module in teacher.module_list:
            if module is teacher.dense_head:
                break
            tbatch = module(tbatch)
        preds = raw_head_maps(teacher.dense_head, tbatch['spatial_features_2d'])
        boxes = decode_boxes(teacher, preds, tbatch['batch_size'], d.plan.decode_cfgs['teacher'])
    return tbatch['spatial_features_2d'], preds, boxes


def _assert_close(got, ref, what, rel=1e-5):
    assert got.shape == ref.shape and got.dtype == ref.dtype, what
    err = (got - ref).abs().max().item() / max(ref.abs().max().item(), 1e-12)
    assert err <= rel, f'{what}: relative error {err:.2e}'


def _assert_frozen_outputs_match(d, batch):
    out = d.forward_teacher(batch)
    feats, preds, boxes = _plain_teacher_outputs(d, batch)
    tensors = [out['spatial_features_2d']] + [v for p in out['pred_dicts'] for v in p.values()]
    assert all(not t.is_inference() and not t.requires_grad and t.grad_fn is None and t.is_contiguous()
               for t in tensors)  # ordinary tensors, no graph kept, laid out as the plain teacher's
    _assert_close(out['spatial_features_2d'], feats, 'spatial_features_2d')
    for i, (got, ref) in enumerate(zip(out['pred_dicts'], preds)):
        assert set(got) == set(ref)
        for key in ref:
            _assert_close(got[key], ref[key], f'pred_dicts[{i}].{key}')
    assert len(out['boxes']) == len(boxes) and sum(len(b['pred_scores']) for b in boxes) > 0
    for b, (got, ref) in enumerate(zip(out['boxes'], boxes)):
        assert torch.equal(got['pred_labels'], ref['pred_labels']), b
        for key in ('pred_boxes', 'pred_scores'):
            _assert_close(got[key], ref[key], f'boxes[{b}].{key}')


def test_frozen_teacher_outputs_equal_the_unfolded_teachers(bn_teacher_ckpt):
    cfg = kd_cfg(bn_teacher_ckpt, losses=[PAPER_RDD, LOGIT, BOXES])
    d = build_distiller(cfg).train()
    assert d.plan.teacher_boxes
    runner = d.inference_teacher
    assert runner is not d.teacher and count_batchnorms(runner) == 0 < count_batchnorms(d.teacher)
    assert not runner.training and not any(p.requires_grad for p in runner.parameters())
    _assert_frozen_outputs_match(d, make_batch(cfg))


def test_frozen_teacher_with_its_own_voxels(bn_teacher_ckpt):
    """Teacher grid != data grid: the teacher's own voxeliser runs inside the frozen forward."""
    cfg = kd_cfg(bn_teacher_ckpt, losses=[LOGIT, BOXES, FITNET])
    for data_cfg in (cfg.DATA_CONFIG, cfg.MODEL.STUDENT.DATA_CONFIG):
        data_cfg.DATA_PROCESSOR[-1].VOXEL_SIZE = [0.4, 0.4, 0.2]
    d = build_distiller(cfg).train()
    assert d.teacher_voxelizer is not None
    _assert_frozen_outputs_match(d, make_batch(cfg))


@pytest.mark.parametrize('losses', [[PAPER_RDD], [LOGIT]], ids=['rdd_paper', 'logit_kd'])
def test_student_gradients_equal_with_the_plain_teacher(bn_teacher_ckpt, losses):
    cfg = kd_cfg(bn_teacher_ckpt, losses=losses)
    batch = make_batch(cfg)
    grads, tbs = [], []
    for unfold in (False, True):
        d = build_distiller(cfg, seed=3).train()  # same student and KD-loss initialisation
        if unfold:
            d.unfold_teacher()
        assert (d.inference_teacher is d.teacher) == unfold
        ret, tb, _ = d(dict(batch))
        ret['loss'].backward()
        grads.append({n: p.grad for n, p in d.named_parameters() if p.grad is not None})
        tbs.append(tb)
        assert all(p.grad is None and not p.requires_grad
                   for p in list(d.teacher.parameters()) + list(d.inference_teacher.parameters()))
    kd_key = losses[0]['NAME']
    assert tbs[0][f'kd/{kd_key}'] > 0 and tbs[0][f'kd/{kd_key}'] == pytest.approx(tbs[1][f'kd/{kd_key}'], rel=1e-5)
    if kd_key == 'RDDLoss':
        assert tbs[0]['kd/RDDLoss/rdd_pairs'] == tbs[1]['kd/RDDLoss/rdd_pairs'] > 0
    frozen, plain = grads
    assert set(frozen) == set(plain) and any(n.startswith('student.backbone_3d') for n in frozen)
    # |frozen - plain| <= 1e-5 |plain|max + 1e-6 of the largest gradient: the absolute part covers the parameters
    # whose gradient is mathematically zero and pure rounding (a conv bias before a training-mode BatchNorm, ~1e-5
    # where weight gradients are ~40); with the plain teacher twice the gradients are bit-identical
    largest = max(g.abs().max().item() for g in plain.values())
    for name, ref in plain.items():
        diff, ref_max = (frozen[name] - ref).abs().max().item(), ref.abs().max().item()
        assert diff <= 1e-5 * ref_max + 1e-6 * largest, f'{name}: gradient difference {diff:.2e} (max {ref_max:.2e})'


def test_batch_statistics_keep_the_plain_teacher(bn_teacher_ckpt):
    """TEACHER_BN: batch cannot be folded: the forward runs the teacher itself with the batch's statistics."""
    cfg = kd_cfg(bn_teacher_ckpt, losses=[LOGIT, FITNET], TEACHER_BN='batch')
    d = build_distiller(cfg).train()
    assert d.inference_teacher is d.teacher and count_batchnorms(d.teacher) > 0
    batch = make_batch(cfg)
    out = d.forward_teacher(batch)
    feats, preds, _ = _plain_teacher_outputs(d, batch)  # the same BN modules in batch mode
    assert torch.equal(out['spatial_features_2d'], feats)
    assert all(torch.equal(out['pred_dicts'][i][k], preds[i][k]) for i in range(len(preds)) for k in preds[i])
    assert not out['spatial_features_2d'].is_inference() and out['spatial_features_2d'].grad_fn is None


def test_frozen_copy_follows_moves_and_modes_but_stays_out_of_the_module_tree(bn_teacher_ckpt):
    d = build_distiller(kd_cfg(bn_teacher_ckpt, losses=[LOGIT]))
    runner_ids = {id(p) for p in d.inference_teacher.parameters()}
    assert runner_ids and not runner_ids & {id(p) for p in d.parameters()}
    assert all(k.startswith(('student.', 'kd_losses.')) for k in d.state_dict())
    d.train()
    assert d.student.training and not d.inference_teacher.training and not d.teacher.training
    d.double()
    assert {p.dtype for p in d.inference_teacher.parameters()} == {torch.float64}
    d.float()
    assert {p.dtype for p in d.inference_teacher.parameters()} == {torch.float32}
    out = d.forward_teacher(make_batch(kd_cfg(bn_teacher_ckpt)))
    assert out['pred_dicts'][0]['hm'].dtype == torch.float32


def test_teacher_precision_is_checked(bn_teacher_ckpt):
    with pytest.raises(KDConfigError, match='TEACHER_PRECISION'):
        build_distiller(kd_cfg(bn_teacher_ckpt, losses=[LOGIT], TEACHER_PRECISION='fp8'))
    d = build_distiller(kd_cfg(bn_teacher_ckpt, losses=[LOGIT]))
    with pytest.raises(KDConfigError, match='TEACHER_PRECISION'):
        Distiller(d.student, d.teacher, {}, teacher_precision='half')
    cfg = kd_cfg(bn_teacher_ckpt, losses=[LOGIT], TEACHER_PRECISION='fp16')
    d = build_distiller(cfg).train()
    with pytest.raises(KDConfigError, match='MODEL.TEACHER_PRECISION: fp16 .* needs CUDA'):
        d(make_batch(cfg))


def test_bf16_teacher_on_cpu(bn_teacher_ckpt):
    """bf16 on CPU: the dense layers autocast (the sparse convs stay fp32), outputs cast back to fp32, within bf16
    rounding of the fp32 teacher's; a training step runs."""
    losses = [PAPER_RDD, LOGIT, FITNET]
    ref = build_distiller(kd_cfg(bn_teacher_ckpt, losses=losses)).train()
    cfg = kd_cfg(bn_teacher_ckpt, losses=losses, TEACHER_PRECISION='bf16')
    d = build_distiller(cfg).train()
    batch = make_batch(cfg)
    out, out_ref = d.forward_teacher(batch), ref.forward_teacher(batch)
    _assert_close(out['spatial_features_2d'], out_ref['spatial_features_2d'], 'spatial_features_2d', rel=3e-2)
    _assert_close(out['pred_dicts'][0]['hm'], out_ref['pred_dicts'][0]['hm'], 'hm', rel=3e-2)
    assert not torch.equal(out['pred_dicts'][0]['hm'], out_ref['pred_dicts'][0]['hm'])  # bf16 did run
    ret, _, _ = d(batch)
    ret['loss'].backward()
    assert torch.isfinite(ret['loss'])


def test_fp32_teacher_ignores_the_callers_autocast(bn_teacher_ckpt):
    """TEACHER_PRECISION fp32 keeps the teacher in fp32 inside an autocast region (the trainer's AMP): on CPU a
    bf16 autocast would otherwise reach spconv, which has no bf16 CPU kernels."""
    cfg = kd_cfg(bn_teacher_ckpt, losses=[LOGIT, FITNET])
    d = build_distiller(cfg).train()
    batch = make_batch(cfg)
    ref = d.forward_teacher(batch)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = d.forward_teacher(batch)
    assert torch.equal(out['spatial_features_2d'], ref['spatial_features_2d'])
    assert out['pred_dicts'][0]['hm'].dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_teacher_precision_autocasts_on_cuda(bn_teacher_ckpt, precision):
    """Autocast teacher: fp32 outputs (cast back) close to the fp32 teacher's; a training step runs. (spconv 2.3
    runs its sparse convolutions in fp16 under any CUDA autocast.)"""
    losses = [PAPER_RDD, LOGIT, FITNET]
    ref_d = build_distiller(kd_cfg(bn_teacher_ckpt, losses=losses)).cuda().train()
    cfg = kd_cfg(bn_teacher_ckpt, losses=losses, TEACHER_PRECISION=precision)
    d = build_distiller(cfg).cuda().train()
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in make_batch(cfg).items()}
    out, ref = d.forward_teacher(batch), ref_d.forward_teacher(batch)
    _assert_close(out['spatial_features_2d'], ref['spatial_features_2d'], 'spatial_features_2d', rel=5e-2)
    _assert_close(out['pred_dicts'][0]['hm'], ref['pred_dicts'][0]['hm'], 'hm', rel=5e-2)
    ret, _, _ = d(batch)
    ret['loss'].backward()
    assert torch.isfinite(ret['loss'])
