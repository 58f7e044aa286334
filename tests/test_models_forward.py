"""Forward / backward / eval of the CenterPoint-Voxel family on small synthetic batches (CPU)."""
import math
from pathlib import Path

import pytest
import torch
from easydict import EasyDict

from reference_utils import SMALL_RANGE, clone_batch, model_cfg_dict, synthetic_batch
from rdd.config import ConfigError
from rdd.models import build_model
from rdd.models.backbones_2d import BaseBEVBackbone, BaseBEVBackboneWidth, HeightCompression
from rdd.models.vfe import MeanVFE
from rdd.ops.spconv_compat import spconv

VARIANTS = ('teacher_0075', 'cp_voxel_s', 'cp_voxel_xs', 'cp_voxel_xxs')
BEV_CHANNELS = {'teacher_0075': 512, 'cp_voxel_s': 256, 'cp_voxel_xs': 256, 'cp_voxel_xxs': 128}


@pytest.fixture(scope='module')
def models():
    torch.manual_seed(0)
    return {v: build_model(model_cfg_dict(v, point_cloud_range=SMALL_RANGE)) for v in VARIANTS}


@pytest.fixture(scope='module')
def batch():
    return synthetic_batch(num_boxes=(4, 3), seed=0)


def test_mean_vfe():
    vfe = MeanVFE(EasyDict(NAME='MeanVFE'), num_point_features=5)
    assert vfe.get_output_feature_dim() == 5
    voxels = torch.zeros(3, 4, 5)
    voxels[0, :2] = torch.tensor([[1., 2, 3, 4, 5], [3, 4, 5, 6, 7]])
    voxels[1, 0] = torch.arange(5.)
    out = vfe({'voxels': voxels, 'voxel_num_points': torch.tensor([2, 1, 0], dtype=torch.int32)})
    expected = torch.tensor([[2., 3, 4, 5, 6], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    assert torch.equal(out['voxel_features'], expected)


def test_height_compression_channel_order():
    # features (V, C=3) at z=0 and z=1 of a (D=2, H=2, W=3) grid: BEV channel index = c * D + d
    idx = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 2], [1, 1, 0, 0]], dtype=torch.int32)
    feats = torch.tensor([[1., 2, 3], [10, 20, 30], [7, 8, 9]])
    x = spconv.SparseConvTensor(feats, idx, [2, 2, 3], 2)
    hc = HeightCompression(EasyDict(NAME='HeightCompression', NUM_BEV_FEATURES=6))
    out = hc({'encoded_spconv_tensor': x, 'encoded_spconv_tensor_stride': 8})
    bev = out['spatial_features']
    assert bev.shape == (2, 6, 2, 3) and out['spatial_features_stride'] == 8
    assert bev[0, :, 1, 2].tolist() == [1, 10, 2, 20, 3, 30]
    assert bev[1, :, 0, 0].tolist() == [0, 7, 0, 8, 0, 9]
    with pytest.raises(ValueError, match='NUM_BEV_FEATURES'):
        HeightCompression(EasyDict(NUM_BEV_FEATURES=4))({'encoded_spconv_tensor': x,
                                                        'encoded_spconv_tensor_stride': 8})


def test_bev_backbone_width_and_shapes():
    cfg = EasyDict(NAME='BaseBEVBackboneWidth', LAYER_NUMS=[1, 1], LAYER_STRIDES=[1, 2], NUM_FILTERS=[128, 256],
                   UPSAMPLE_STRIDES=[1, 2], NUM_UPSAMPLE_FILTERS=[256, 256], WIDTH=0.25)
    with pytest.raises(ConfigError, match=r'BACKBONE_2D\.WIDTH.*NUM_FILTERS: \[32, 64\].*BaseBEVBackboneWidth'):
        BaseBEVBackbone(cfg, input_channels=16)  # OpenPCDet's class of this name would ignore WIDTH
    net = BaseBEVBackboneWidth(cfg, input_channels=16)
    assert net.num_bev_features == 128
    assert [b[1].out_channels for b in net.blocks] == [32, 64]
    out = net({'spatial_features': torch.randn(2, 16, 12, 12)})['spatial_features_2d']
    assert out.shape == (2, 128, 12, 12)
    with pytest.raises(ValueError, match='LAYER_NUMS'):
        BaseBEVBackbone(EasyDict(LAYER_NUMS=[1], LAYER_STRIDES=[1, 2], NUM_FILTERS=[8, 8]), 4)


def _finite(x):
    return bool(torch.isfinite(x).all())


@pytest.mark.parametrize('variant', VARIANTS)
def test_train_forward_backward(models, batch, variant):
    model = models[variant]
    model.train()
    model.zero_grad()
    inp = clone_batch(batch)
    gt_before = inp['gt_boxes'].clone()
    ret, tb, disp = model(inp)
    loss = ret['loss']
    assert loss.dim() == 0 and _finite(loss) and loss.item() > 0
    assert isinstance(tb['loss_rpn'], float) and math.isclose(tb['loss_rpn'], loss.item(), rel_tol=1e-6)
    assert isinstance(disp, dict)
    assert inp['spatial_features_2d'].shape == (2, BEV_CHANNELS[variant], 40, 40)
    assert inp['encoded_spconv_tensor_stride'] == 8 and set(inp['multi_scale_3d_strides']) == {
        'x_conv1', 'x_conv2', 'x_conv3', 'x_conv4'}
    assert torch.equal(inp['gt_boxes'], gt_before), 'the model must not modify the caller gt_boxes'
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, f'parameters without gradient: {missing[:5]}'
    assert all(_finite(g) for g in grads.values())
    assert model.backbone_3d.conv_input[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize('variant', ('teacher_0075', 'cp_voxel_xxs'))
def test_eval_predictions_well_formed(models, batch, variant):
    model = models[variant]
    model.eval()
    with torch.no_grad():
        preds, recall = model(clone_batch(batch))
    assert len(preds) == 2
    for p in preds:
        n = p['pred_boxes'].shape[0]
        assert p['pred_boxes'].shape == (n, 9) and p['pred_scores'].shape == (n,) and p['pred_labels'].shape == (n,)
        assert p['pred_labels'].dtype == torch.int64
        if n:
            assert 1 <= int(p['pred_labels'].min()) and int(p['pred_labels'].max()) <= 10
            assert float(p['pred_scores'].min()) >= 0.1 and float(p['pred_scores'].max()) <= 1.0
            assert _finite(p['pred_boxes'])
    assert recall['gt'] == 7
    assert set(recall) == {'gt', 'roi_0.3', 'rcnn_0.3', 'roi_0.5', 'rcnn_0.5', 'roi_0.7', 'rcnn_0.7'}
    assert all(0 <= recall[f'rcnn_{t}'] <= 7 for t in (0.3, 0.5, 0.7))


def test_recall_counts_a_perfect_prediction(models):
    gt = torch.tensor([[[0., 0, -1, 4, 2, 1.5, 0.3, 0, 0, 1], [5, 5, -1, 1, 1, 1, 0, 0, 0, 9], [0] * 10]])
    rec = models['teacher_0075'].generate_recall_record(
        box_preds=gt[0, :1, :9].clone(), recall_dict={}, batch_index=0, data_dict={'gt_boxes': gt},
        thresh_list=[0.3, 0.7])
    assert rec == {'gt': 2, 'roi_0.3': 0, 'rcnn_0.3': 1, 'roi_0.7': 0, 'rcnn_0.7': 1}


def test_zero_gt_boxes_and_empty_sample(models):
    model = models['cp_voxel_s']
    inp = synthetic_batch(num_boxes=(0, 2), seed=1, empty_samples=(1,))
    assert inp['gt_boxes'].shape == (2, 2, 10) and inp['gt_boxes'][0].abs().sum() == 0
    assert int((inp['voxel_coords'][:, 0] == 1).sum()) == 0  # sample 1 has no points at all
    model.train()
    model.zero_grad()
    ret, tb, _ = model(clone_batch(inp))
    assert _finite(ret['loss']) and all(math.isfinite(v) for v in tb.values())
    ret['loss'].backward()
    assert all(_finite(p.grad) for p in model.parameters() if p.grad is not None)
    inp['gt_boxes'].zero_()
    ret, _, _ = model(clone_batch(inp))
    assert _finite(ret['loss'])
    model.eval()
    with torch.no_grad():
        preds, recall = model(clone_batch(inp))
    assert recall['gt'] == 0 and len(preds) == 2
    assert all(_finite(p['pred_boxes']) and _finite(p['pred_scores']) for p in preds)


def test_teacher_forward_bitwise_repeatable(models, batch):
    model = models['teacher_0075']
    state = {k: v.clone() for k, v in model.state_dict().items()}
    outs = []
    for _ in range(2):
        model.load_state_dict(state)
        model.train()
        inp = clone_batch(batch)
        ret, _, _ = model(inp)
        outs.append((ret['loss'].detach(), inp['spatial_features'], inp['spatial_features_2d'].detach()))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    model.load_state_dict(state)


def test_global_step(models):
    model = models['cp_voxel_xxs']
    start = int(model.global_step)
    model.update_global_step()
    model.update_global_step()
    assert model.global_step.dtype == torch.int64 and model.global_step.shape == (1,)
    assert int(model.global_step) == start + 2
    assert model.mode == ('TRAIN' if model.training else 'TEST')


def test_no_cuda_calls_in_model_code():
    root = Path(__file__).resolve().parent.parent / 'rdd' / 'models'
    offenders = [str(p) for sub in ('vfe', 'backbones_3d', 'backbones_2d', 'detectors') for p in (root / sub).glob('*.py')
                 if '.cuda(' in p.read_text()]
    offenders += [str(p) for p in (root / '__init__.py', root / 'checkpoint.py') if '.cuda(' in p.read_text()]
    assert not offenders
