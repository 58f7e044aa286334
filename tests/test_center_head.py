"""Unit tests of the CenterPoint head: gaussian targets, encoding/decoding, losses, head behaviour on CPU."""
import copy
import math

import numpy as np
import pytest
import torch

from reference_utils import CLASS_NAMES, COMPAT, compat_json, model_cfg_dict
from rdd.geometry import BEVGrid
from rdd.models.dense_heads import CenterHead, centernet_utils, targets
from rdd.models.dense_heads.losses import focal_loss_centernet, reg_loss_centernet

# small geometry: 16 x 16 BEV cells of 0.6 m (voxel 0.075 m, stride 8)
RANGE = np.array([-4.8, -4.8, -5.0, 4.8, 4.8, 3.0], dtype=np.float32)
VOXEL = [0.075, 0.075, 0.2]
GRID = np.array([128, 128, 40])
BEV = BEVGrid(tuple(RANGE.astype(np.float64).tolist()), tuple(VOXEL), 8)  # where the 16 x 16 maps lie
H = W = 16


def head_cfg(shared=8):
    cfg = copy.deepcopy(model_cfg_dict('teacher_0075').MODEL.DENSE_HEAD)
    cfg.SHARED_CONV_CHANNEL = shared
    return cfg


def make_head(cfg=None, in_ch=16, **kw):
    torch.manual_seed(0)
    return CenterHead(cfg or head_cfg(), in_ch, 10, CLASS_NAMES, GRID, RANGE, VOXEL, **kw)


def gt_batch():
    """(2, 4, 10): sample 0 has a car, a bus, a pedestrian; sample 1 a truck and one padding row."""
    gt = torch.zeros(2, 4, 10)
    gt[0, 0] = torch.tensor([1.1, -2.3, -0.9, 4.5, 1.9, 1.6, 0.4, 2.0, -1.0, 1])
    gt[0, 1] = torch.tensor([-3.0, 2.5, -0.5, 10.0, 2.9, 3.4, -2.9, 0.5, 0.3, 4])
    gt[0, 2] = torch.tensor([2.9, 3.1, -1.0, 0.7, 0.6, 1.7, 3.0, 0.0, 0.0, 9])
    gt[1, 0] = torch.tensor([-1.7, -3.4, -0.8, 6.5, 2.5, 2.8, -1.2, -3.0, 0.5, 2])
    return gt


# ------------------------------------------------------------------ gaussian targets
def test_gaussian_radius_golden():
    # by hand: 4 x 4 cells, overlap 0.1 -> third root (-1.6 + sqrt(2.56 + 4*0.4*14.4)) / 2 = (-1.6 + sqrt(25.6)) / 2
    # 2 x 6 cells, overlap 0.5 -> (-8 + sqrt(64 + 4*2*6)) / 2 = (-8 + sqrt(112)) / 2 (roots 1 and 2: 7.46, 14.32)
    r = targets.gaussian_radius(torch.tensor([4.0, 2.0]), torch.tensor([4.0, 6.0]), min_overlap=0.1)
    assert r[0].item() == pytest.approx((-1.6 + math.sqrt(25.6)) / 2, rel=1e-6)
    r = targets.gaussian_radius(torch.tensor([2.0]), torch.tensor([6.0]), min_overlap=0.5)
    assert r[0].item() == pytest.approx((-8 + math.sqrt(112.0)) / 2, rel=1e-6)
    assert r[0].item() == pytest.approx(1.2915026, rel=1e-6)


def test_draw_gaussian_values_and_border_clipping():
    hm = torch.zeros(10, 12)
    targets.draw_gaussian_to_heatmap(hm, (5.7, 4.2), 2)  # cell (x=5, y=4)
    assert hm[4, 5] == 1.0 and hm.max() == 1.0
    sigma2 = (5 / 6) ** 2
    assert hm[4, 6].item() == pytest.approx(math.exp(-1 / (2 * sigma2)), rel=1e-6)
    assert hm[6, 7].item() == pytest.approx(math.exp(-8 / (2 * sigma2)), rel=1e-6)
    assert hm[4, 8] == 0 and hm[7, 5] == 0  # outside radius 2
    assert int((hm > 0).sum()) == 25
    # max with an existing value, and clipping at the corner
    hm2 = torch.full((10, 12), 0.5)
    targets.draw_gaussian_to_heatmap(hm2, (0.2, 0.0), 3)
    assert hm2[0, 0] == 1.0 and hm2[9, 11] == 0.5 and hm2[3, 3] == 0.5
    assert int((hm2 > 0.5).sum()) < 16


def test_targets_peak_index_and_encoding():
    gt = gt_batch()
    t = targets.assign_targets(gt, CLASS_NAMES, model_cfg_dict().MODEL.DENSE_HEAD.CLASS_NAMES_EACH_HEAD,
                                       (H, W), BEV, targets.TargetParams(num_max_objs=500))
    # car (head 0) in sample 0 at x=1.1 -> (1.1 + 4.8) / 0.6 = 9.833 -> cell x 9; y=-2.3 -> 4.167 -> cell y 4
    assert t['inds'][0][0, 0] == 4 * W + 9 and t['masks'][0][0].sum() == 1 and t['masks'][0][1].sum() == 0
    assert t['heatmaps'][0][0, 0, 4, 9] == 1.0 and (t['heatmaps'][0][0, 0] == 1).sum() == 1
    box = t['target_boxes'][0][0, 0]
    expected = torch.tensor([9.8333333 - 9, 4.1666667 - 4, -0.9, math.log(4.5), math.log(1.9), math.log(1.6),
                             math.cos(0.4), math.sin(0.4), 2.0, -1.0])
    torch.testing.assert_close(box, expected, atol=1e-5, rtol=1e-5)
    # bus -> head 2 class 0; pedestrian -> head 5 class 0; truck (sample 1) -> head 1 class 0
    assert t['heatmaps'][2][0, 0].max() == 1 and t['heatmaps'][2][0, 1].max() == 0
    assert t['heatmaps'][5][0, 0].max() == 1 and t['heatmaps'][5][0, 1].max() == 0
    assert t['heatmaps'][1][1, 0].max() == 1 and t['heatmaps'][1][0].max() == 0
    assert [int(m.sum()) for m in t['masks']] == [1, 1, 1, 0, 0, 1]
    assert t['target_boxes'][0].shape == (2, 500, 10) and t['inds'][0].dtype == torch.int64


def test_targets_box_outside_map_is_clamped_and_bad_label_rejected():
    gt = torch.zeros(1, 2, 10)
    gt[0, 0] = torch.tensor([30.0, -30.0, 0, 4, 2, 1.5, 0, 0, 0, 1])  # far outside: OpenPCDet clamps to the border
    t = targets.assign_targets(gt, CLASS_NAMES, [['car'], ['truck']] + [[n] for n in CLASS_NAMES[2:]],
                                       (H, W), BEV)
    assert t['masks'][0][0, 0] == 1 and t['inds'][0][0, 0] == 0 * W + (W - 1)
    gt[0, 1, -1] = 11
    with pytest.raises(ValueError, match='class column'):
        targets.assign_targets(gt, CLASS_NAMES, [CLASS_NAMES], (H, W), BEV)


def _maps_from_targets(targets, hm_logit=8.0):
    """Raw head maps that encode exactly the target boxes (inverse of the target encoding)."""
    preds = []
    for h in range(len(targets['heatmaps'])):
        n_cls = targets['heatmaps'][h].shape[1]
        b = targets['heatmaps'][h].shape[0]
        maps = torch.zeros(b, 10, H * W)
        hm = torch.full((b, n_cls, H * W), -8.0)
        for s in range(b):
            valid = targets['masks'][h][s].bool()
            cells = targets['inds'][h][s][valid]
            maps[s][:, cells] = targets['target_boxes'][h][s][valid].t()
            peak = targets['heatmaps'][h][s].view(n_cls, -1)[:, cells]
            hm[s][:, cells] = torch.where(peak == 1, torch.full_like(peak, hm_logit), hm[s][:, cells])
        maps = maps.view(b, 10, H, W)
        preds.append({'center': maps[:, 0:2], 'center_z': maps[:, 2:3], 'dim': maps[:, 3:6], 'rot': maps[:, 6:8],
                      'vel': maps[:, 8:10], 'hm': hm.view(b, n_cls, H, W)})
    return preds


def test_encoding_round_trips_through_decode():
    head = make_head().eval()
    gt = gt_batch()
    targets = head.assign_targets(gt, (H, W))
    dets = head.decode(_maps_from_targets(targets), batch_size=2)
    for s in range(2):
        valid = gt[s, :, -1] > 0
        ref = gt[s, valid]
        got = dets[s]
        assert got['pred_boxes'].shape == (int(valid.sum()), 9) and got['pred_labels'].dtype == torch.int64
        order = torch.argsort(got['pred_labels'])
        ref = ref[torch.argsort(ref[:, -1])]
        torch.testing.assert_close(got['pred_boxes'][order], ref[:, :9], atol=1e-4, rtol=1e-5)
        assert got['pred_labels'][order].tolist() == ref[:, -1].long().tolist()
        assert torch.all(got['pred_scores'] > 0.999)


def test_decode_respects_score_thresh_and_center_limit():
    hm = torch.full((1, 2, H, W), -10.0)
    hm[0, 0, 3, 4] = 2.0                              # score 0.88 -> kept
    hm[0, 1, 8, 8] = math.log(0.05 / 0.95)            # score 0.05 < 0.1 -> dropped
    hm[0, 0, 12, 12] = 1.0                            # score 0.73 but z outside the limit -> dropped
    zeros = lambda c: torch.zeros(1, c, H, W)
    center_z = zeros(1)
    center_z[0, 0, 12, 12] = 20.0
    rot = zeros(2)
    rot[:, 0] = 1.0
    maps = {'heatmap': hm.sigmoid(), 'rot_cos': rot[:, 0:1], 'rot_sin': rot[:, 1:2], 'center': zeros(2),
            'center_z': center_z, 'dim': zeros(3).exp(), 'vel': zeros(2)}
    out = centernet_utils.decode_bbox_from_heatmap(maps, BEV, centernet_utils.DecodeParams(
        k=10, score_thresh=0.1, post_center_limit_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0]))[0]
    assert out['cell_index'].tolist() == [3 * W + 4]
    assert out['pred_labels'].tolist() == [0] and out['pred_labels'].dtype == torch.int32
    torch.testing.assert_close(out['pred_boxes'][0, :2], torch.tensor([4 * 0.6 - 4.8, 3 * 0.6 - 4.8]))
    assert out['pred_scores'][0].item() == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    # the threshold is strict, and K limits the candidates
    out = centernet_utils.decode_bbox_from_heatmap(maps, BEV, centernet_utils.DecodeParams(k=1))[0]
    assert out['cell_index'].tolist() == [3 * W + 4]


# ------------------------------------------------------------------ losses
def test_focal_loss_golden():
    pred = torch.tensor([0.9, 0.2, 0.5]).view(1, 1, 1, 3)
    gt = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 1, 3)
    pos = math.log(0.9) * 0.1 ** 2
    neg = math.log(0.8) * 0.2 ** 2 * 0.5 ** 4 + math.log(0.5) * 0.5 ** 2 * 1.0
    assert focal_loss_centernet(pred, gt).item() == pytest.approx(-(pos + neg) / 1, rel=1e-6)
    gt0 = torch.tensor([0.0, 0.5, 0.0]).view(1, 1, 1, 3)  # no positive: -sum(neg)
    neg0 = math.log(0.1) * 0.81 + math.log(0.8) * 0.04 * 0.0625 + math.log(0.5) * 0.25
    assert focal_loss_centernet(pred, gt0).item() == pytest.approx(-neg0, rel=1e-6)


def test_reg_loss_golden_with_nan_target():
    pred_map = torch.arange(6, dtype=torch.float32).view(1, 2, 1, 3)  # code 0: [0,1,2], code 1: [3,4,5]
    ind = torch.tensor([[2, 0, 1]])
    mask = torch.tensor([[1, 1, 0]])
    target = torch.tensor([[[1.0, float('nan')], [0.5, 3.0], [100.0, 100.0]]])
    loss = reg_loss_centernet(pred_map, mask, ind, target)
    # code 0: |2-1| + |0-0.5| = 1.5; code 1: NaN ignored + |3-3| = 0; divided by 2 valid slots
    torch.testing.assert_close(loss, torch.tensor([0.75, 0.0]))
    assert torch.equal(reg_loss_centernet(pred_map, mask * 0, ind, target), torch.zeros(2))


# ------------------------------------------------------------------ head
def test_state_dict_matches_openpcdet_teacher_and_student():
    for variant, json_name, in_ch in [('teacher_0075', 'openpcdet_cbgs_voxel0075_res3d_centerpoint.state_dict.json',
                                       512), ('cp_voxel_s', 'openpcdet_cp_voxel_s_0075.state_dict.json', 256)]:
        _, ref = compat_json(json_name)
        ref = [(k[len('dense_head.'):], v) for k, v in ref.items() if k.startswith('dense_head.')]
        head = CenterHead(model_cfg_dict(variant).MODEL.DENSE_HEAD, in_ch, 10, CLASS_NAMES,
                          np.array([1440, 1440, 40]), RANGE, VOXEL)
        mine = [(k, list(v.shape)) for k, v in head.state_dict().items()]
        assert mine == ref, variant


def test_init_and_mapping_attributes():
    head = make_head(head_cfg(shared=64))
    for sep in head.heads_list:
        assert torch.all(sep.hm[-1].bias == -2.19)
        w = sep.center[-1].weight
        assert w.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.15)
        assert torch.all(sep.vel[-1].bias == 0) and torch.all(sep.dim[0][0].bias == 0)
    assert [m.tolist() for m in head.class_id_mapping_each_head] == [[0], [1, 2], [3, 4], [5], [6, 7], [8, 9]]
    buffers = dict(head.named_buffers())
    assert not any('mapping' in k for k in buffers)


def test_head_train_loss_keeps_logits_and_gt_and_backprops():
    head = make_head().train()
    torch.manual_seed(1)
    gt = gt_batch()
    gt_before = gt.clone()
    data = head({'spatial_features_2d': torch.randn(2, 16, H, W, requires_grad=True), 'gt_boxes': gt,
                 'batch_size': 2})
    assert torch.equal(gt, gt_before)
    assert 'final_box_dicts' not in data
    logits = [p['hm'].detach().clone() for p in head.forward_ret_dict['pred_dicts']]
    loss, tb = head.get_loss()
    assert torch.isfinite(loss)
    assert sorted(tb) == sorted([f'hm_loss_head_{i}' for i in range(6)] + [f'loc_loss_head_{i}' for i in range(6)]
                                + ['rpn_loss'])
    assert tb['rpn_loss'] == pytest.approx(sum(v for k, v in tb.items() if k != 'rpn_loss'), rel=1e-5)
    assert tb['loc_loss_head_3'] == 0.0 and tb['loc_loss_head_0'] > 0  # no barrier in the batch
    for before, pred in zip(logits, head.forward_ret_dict['pred_dicts']):
        assert torch.equal(before, pred['hm'])  # raw logits, not overwritten by the sigmoid
    loss.backward()
    assert head.shared_conv[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.heads_list[0].parameters())
    # a second forward on the same dict gives the same targets (labels were not rewritten)
    first = [t.clone() for t in head.forward_ret_dict['target_dicts']['heatmaps']]
    head(data)
    for a, b in zip(first, head.forward_ret_dict['target_dicts']['heatmaps']):
        assert torch.equal(a, b)


def test_zero_gt_batch_finite_loss():
    head = make_head().train()
    torch.manual_seed(2)
    head({'spatial_features_2d': torch.randn(2, 16, H, W), 'gt_boxes': torch.zeros(2, 3, 10), 'batch_size': 2})
    loss, tb = head.get_loss()
    assert torch.isfinite(loss) and loss > 0
    assert all(tb[f'loc_loss_head_{i}'] == 0.0 for i in range(6))
    loss.backward()
    head({'spatial_features_2d': torch.randn(1, 16, H, W), 'gt_boxes': torch.zeros(1, 0, 10), 'batch_size': 1})
    assert torch.isfinite(head.get_loss()[0])


def test_head_eval_decodes_and_post_cfg_overrides():
    head = make_head().eval()
    torch.manual_seed(3)
    with torch.no_grad():
        data = head({'spatial_features_2d': torch.randn(2, 16, H, W), 'batch_size': 2})
    dets = data['final_box_dicts']
    assert len(dets) == 2
    for d in dets:
        n = d['pred_boxes'].shape[0]
        assert d['pred_boxes'].shape == (n, 9) and d['pred_scores'].shape == (n,)
        assert d['pred_labels'].dtype == torch.int64
        assert n == 0 or (d['pred_labels'].min() >= 1 and d['pred_labels'].max() <= 10)
        assert torch.all(d['pred_scores'] > 0.1)
    pred_dicts = head.forward_ret_dict['pred_dicts']
    strict = head.decode(pred_dicts, 2, post_cfg={'SCORE_THRESH': 0.3, 'NMS_CONFIG': {'NMS_POST_MAXSIZE': 2}})
    for loose, tight in zip(dets, strict):
        assert torch.all(tight['pred_scores'] > 0.3)
        assert tight['pred_boxes'].shape[0] <= min(12, loose['pred_boxes'].shape[0])
    one = head.decode(pred_dicts, 2, post_cfg={'SCORE_THRESH': 0.0, 'MAX_OBJ_PER_SAMPLE': 1})
    assert all(d['pred_boxes'].shape[0] == 6 for d in one)  # one candidate per head
    with pytest.raises(KeyError, match='NMS_THRES'):
        head.decode(pred_dicts, 2, post_cfg={'NMS_CONFIG': {'NMS_THRES': 0.5}})
    # predict_boxes_when_training decodes in training too
    head2 = make_head(predict_boxes_when_training=True).train()
    out = head2({'spatial_features_2d': torch.randn(1, 16, H, W), 'gt_boxes': gt_batch()[:1], 'batch_size': 1})
    assert len(out['final_box_dicts']) == 1


def test_head_rejects_circle_nms_and_uncovered_classes():
    cfg = head_cfg()
    cfg.POST_PROCESSING.NMS_CONFIG.NMS_TYPE = 'circle_nms'
    with pytest.raises(ValueError, match='circle_nms'):
        make_head(cfg)
    cfg = head_cfg()
    cfg.CLASS_NAMES_EACH_HEAD = cfg.CLASS_NAMES_EACH_HEAD[:-1]
    with pytest.raises(ValueError, match='CLASS_NAMES_EACH_HEAD'):
        make_head(cfg)


def test_cp_voxel_s_checkpoint_head_weights_load_strictly():
    path = COMPAT / 'openpcdet_cp_voxel_s_0075.random.pth'
    if not path.exists():
        pytest.skip('CP-Voxel-S reference checkpoint not found')
    from rdd.models.checkpoint import read_model_state
    state = {k[len('dense_head.'):]: v for k, v in read_model_state(str(path)).items() if k.startswith('dense_head.')}
    student = CenterHead(model_cfg_dict('cp_voxel_s').MODEL.DENSE_HEAD, 256, 10, CLASS_NAMES, GRID, RANGE, VOXEL)
    student.load_state_dict(state, strict=True)
    assert torch.equal(student.heads_list[5].hm[-1].bias, state['heads_list.5.hm.1.bias'])
    teacher = CenterHead(model_cfg_dict('teacher_0075').MODEL.DENSE_HEAD, 512, 10, CLASS_NAMES, GRID, RANGE, VOXEL)
    with pytest.raises(RuntimeError, match='size mismatch'):
        teacher.load_state_dict(state, strict=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_head_follows_cuda_device():
    head = make_head().cuda().train()
    gt = gt_batch().cuda()
    head({'spatial_features_2d': torch.randn(2, 16, H, W, device='cuda'), 'gt_boxes': gt, 'batch_size': 2})
    assert all(t.is_cuda for t in head.forward_ret_dict['target_dicts']['heatmaps'])
    loss, _ = head.get_loss()
    loss.backward()
    head.eval()
    with torch.no_grad():
        targets = head.assign_targets(gt, (H, W))
        dets = head.decode(_maps_from_targets({k: [t.cpu() for t in v] for k, v in targets.items()}), 2)
        dets_gpu = head.decode([{k: v.cuda() for k, v in p.items()} for p in
                                _maps_from_targets({k: [t.cpu() for t in v] for k, v in targets.items()})], 2)
    for a, b in zip(dets, dets_gpu):
        assert b['pred_labels'].is_cuda
        torch.testing.assert_close(a['pred_boxes'], b['pred_boxes'].cpu(), atol=1e-5, rtol=1e-5)


def test_top100_without_nms_post_processing(monkeypatch):
    """``NMS_TYPE: none`` (the paper's evaluation): per sample the MAX_OBJ_PER_SAMPLE best-scored boxes over all
    head groups, in descending score order, and the NMS is never called."""
    import rdd.ops.rotated_iou as rotated_iou

    def no_nms(*args, **kwargs):
        raise AssertionError('NMS ran although NMS_TYPE is none')
    cfg = head_cfg()
    cfg.POST_PROCESSING.NMS_CONFIG.NMS_TYPE = 'none'
    cfg.POST_PROCESSING.MAX_OBJ_PER_SAMPLE = 100
    cfg.POST_PROCESSING.SCORE_THRESH = 0.0
    head = make_head(cfg).eval()
    monkeypatch.setattr(rotated_iou, 'class_agnostic_nms', no_nms)
    torch.manual_seed(4)
    with torch.no_grad():
        dets = head({'spatial_features_2d': torch.randn(2, 16, H, W), 'batch_size': 2})['final_box_dicts']
    hm = torch.cat([d['hm'] for d in head.forward_ret_dict['pred_dicts']], dim=1).sigmoid()  # (2, 10, H, W)
    for b, d in enumerate(dets):
        assert d['pred_boxes'].shape == (100, 9)  # 6 groups x 256 cells of candidates: exactly 100 kept
        assert torch.all(d['pred_scores'][:-1] >= d['pred_scores'][1:])  # ranked by score
        best = torch.topk(hm[b].flatten(), 100).values  # the sample's 100 best (class, cell) scores
        assert torch.allclose(d['pred_scores'], best)
    # MAX_OBJ_PER_SAMPLE caps the sample (the NMS path keeps up to that many per group: 6 x 2 here)
    few = head.decode(head.forward_ret_dict['pred_dicts'], 2, post_cfg={'MAX_OBJ_PER_SAMPLE': 2})
    assert all(torch.allclose(d['pred_scores'], torch.topk(hm[b].flatten(), 2).values) for b, d in enumerate(few))
    cfg.POST_PROCESSING.NMS_CONFIG.NMS_TYPE = None  # YAML null is not 'none'
    with pytest.raises(ValueError, match="write 'none'"):
        make_head(cfg)
