"""Rotated BEV/3D IoU and NMS against shapely and a reference greedy loop."""
import math

import numpy as np
import pytest
import torch
from easydict import EasyDict
from shapely import affinity
from shapely.geometry import box as shapely_box

from rdd.ops.rotated_iou import boxes3d_iou, boxes_bev_iou, class_agnostic_nms, rotated_nms


def _poly(b):
    """Independent shapely polygon of box b = [x, y, z, dx, dy, dz, yaw] (CCW yaw about the centre)."""
    x, y, dx, dy, yaw = float(b[0]), float(b[1]), float(b[3]), float(b[4]), float(b[6])
    p = shapely_box(x - dx / 2, y - dy / 2, x + dx / 2, y + dy / 2)
    return affinity.rotate(p, yaw, origin=(x, y), use_radians=True)


def _shapely_iou(a, b):
    pa, pb = [_poly(x) for x in a], [_poly(x) for x in b]
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(pa):
        for j, q in enumerate(pb):
            inter = p.intersection(q).area
            out[i, j] = inter / max(p.area + q.area - inter, 1e-8)
    return out


def _special_boxes():
    """Identical, contained, touching, disjoint, tiny, thin, far-away and equivalent-yaw boxes."""
    B = [
        [0, 0, 0, 4, 2, 1.5, 0.3],
        [0, 0, 0, 4, 2, 1.5, 0.3],               # identical
        [0, 0, 0, 4, 2, 1.5, 0.3 + math.pi],     # same rectangle, yaw + pi
        [0, 0, 0, 2, 4, 1.5, 0.3 + math.pi / 2],  # same rectangle, dims swapped, yaw + pi/2
        [0.2, 0.1, 0, 1, 0.5, 1, 1.2],           # contained
        [10, 0, 0, 2, 2, 1, 0],
        [12, 0, 0, 2, 2, 1, 0],                  # touching along an edge
        [12, 2, 0, 2, 2, 1, 0],                  # touching at a corner
        [11, 0, 0, 2, 2, 1, math.pi / 4],        # rotated over the shared edge
        [30, 30, 0, 1, 1, 1, 0],                 # disjoint
        [0.5, 0.5, 0, 1e-3, 2e-3, 1e-3, 0.7],    # tiny
        [0.5, 0.5, 0, 1.5e-3, 1e-3, 1e-3, -0.2],  # tiny, overlapping the tiny one
        [0, 0, 0, 20, 0.02, 1, 0.1],             # very thin
        [500.3, -400.7, 0, 4, 2, 1, 2.0],        # far from the origin
        [501.0, -400.2, 0, 3, 1.5, 1, -1.0],
        [0, 0, 0, 4, 2, 1.5, 7.5],               # yaw outside [-pi, pi]
    ]
    return np.array(B, dtype=np.float64)


def _random_boxes(n, seed, spread=12.0):
    rng = np.random.default_rng(seed)
    b = np.zeros((n, 7))
    b[:, :2] = rng.uniform(-spread / 2, spread / 2, (n, 2))
    b[:, 2] = rng.uniform(-1, 1, n)
    b[:, 3:6] = rng.uniform(0.2, 5, (n, 3))
    b[:, 6] = rng.uniform(-math.pi, math.pi, n)
    return b


@pytest.fixture(scope='module')
def boxes():
    return np.concatenate([_special_boxes(), _random_boxes(250, 0)])


@pytest.fixture(scope='module')
def ref_iou(boxes):
    return _shapely_iou(boxes, boxes)


def test_bev_iou_matches_shapely_float64(boxes, ref_iou):
    iou = boxes_bev_iou(torch.from_numpy(boxes), torch.from_numpy(boxes))
    assert iou.dtype == torch.float64 and iou.shape == ref_iou.shape
    assert (ref_iou > 0).sum() > 1000  # the random set really overlaps
    np.testing.assert_allclose(iou.numpy(), ref_iou, atol=1e-9, rtol=0)


def test_bev_iou_matches_shapely_float32(boxes, ref_iou):
    b32 = boxes.astype(np.float32)
    iou = boxes_bev_iou(torch.from_numpy(b32), torch.from_numpy(b32))
    assert iou.dtype == torch.float32
    ref32 = _shapely_iou(b32.astype(np.float64), b32.astype(np.float64))
    np.testing.assert_allclose(iou.numpy(), ref32, atol=1e-4, rtol=0)


def test_bev_iou_special_values():
    b = torch.from_numpy(_special_boxes())
    iou = boxes_bev_iou(b, b)
    assert torch.allclose(iou[0, 1:4], torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert abs(iou[0, 4].item() - 0.5 / 8) < 1e-12             # contained: area ratio
    assert iou[5, 6].item() == 0 and iou[5, 7].item() == 0     # edge / corner contact
    assert iou[5, 9].item() == 0                               # disjoint
    assert iou[10, 11].item() > 0                              # tiny boxes still overlap
    assert torch.allclose(torch.diagonal(iou), torch.ones(len(b), dtype=torch.float64), atol=1e-9)


def test_bev_iou_symmetric_and_extra_columns(boxes):
    a = torch.from_numpy(boxes[:120])
    b = torch.from_numpy(boxes[100:])
    iou_ab = boxes_bev_iou(a, b)
    iou_ba = boxes_bev_iou(b, a)
    torch.testing.assert_close(iou_ab, iou_ba.T, atol=1e-12, rtol=0)
    # extra columns (velocity, labels) are ignored
    a9 = torch.cat([a, torch.randn(len(a), 2, dtype=a.dtype)], 1)
    assert torch.equal(boxes_bev_iou(a9, b), iou_ab)


def test_bev_iou_numpy_in_numpy_out_and_empty(boxes):
    out = boxes_bev_iou(boxes[:5], boxes[:7])
    assert isinstance(out, np.ndarray) and out.shape == (5, 7)
    assert boxes_bev_iou(torch.zeros(0, 7), torch.zeros(4, 7)).shape == (0, 4)
    assert boxes_bev_iou(torch.zeros(3, 7), torch.zeros(0, 7)).shape == (3, 0)


def test_boxes3d_iou():
    a = np.array([[0, 0, 0, 4, 2, 2, 0.3], [0, 0, 1, 4, 2, 2, 0.3], [0, 0, 3, 4, 2, 2, 0.3],
                  [1, 0.5, 0.5, 3, 2, 1, -0.4]])
    iou = boxes3d_iou(torch.from_numpy(a), torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(np.diag(iou), 1, atol=1e-12)
    assert abs(iou[0, 1] - 1 / 3) < 1e-12   # half the height overlaps: 8 / (16 + 16 - 8)
    assert iou[0, 2] == 0                   # z-disjoint (touching faces)
    inter = _poly(a[0]).intersection(_poly(a[3])).area * 1.0  # z overlap [0, 1] of [-1, 1] and [0, 1]
    assert abs(iou[0, 3] - inter / (16 + 6 - inter)) < 1e-9
    assert boxes3d_iou(torch.zeros(0, 7), torch.zeros(2, 7)).shape == (0, 2)


def _reference_nms(boxes, scores, thresh, pre=None, post=None):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:pre]
    polys = {i: _poly(boxes[i]) for i in order}
    keep = []
    for i in order:
        ok = True
        for k in keep:
            inter = polys[i].intersection(polys[k]).area
            if inter / max(polys[i].area + polys[k].area - inter, 1e-8) > thresh:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep[:post]


@pytest.mark.parametrize('thresh,pre,post', [(0.2, None, None), (0.5, 150, None), (0.1, None, 20), (0.0, 100, 50)])
def test_rotated_nms_matches_reference(thresh, pre, post):
    b = _random_boxes(200, 1, spread=15)
    scores = np.random.default_rng(2).random(200).astype(np.float32)
    scores[10:20] = scores[5]  # ties: lower index first
    keep = rotated_nms(torch.from_numpy(b).float(), torch.from_numpy(scores), thresh, pre, post)
    assert keep.dtype == torch.int64
    ref = _reference_nms(b.astype(np.float32).astype(np.float64), scores.tolist(), thresh, pre, post)
    assert keep.tolist() == ref
    assert 0 < len(ref) < (pre or 200)


def test_rotated_nms_strict_threshold_and_empty():
    # two identical boxes: IoU 1 is not > 1, so both stay; at 0.999 the lower one goes
    b = torch.tensor([[0, 0, 0, 2, 2, 1, 0.0], [0, 0, 0, 2, 2, 1, 0.0]])
    s = torch.tensor([0.1, 0.9])
    assert rotated_nms(b, s, 1.0).tolist() == [1, 0]
    assert rotated_nms(b, s, 0.999).tolist() == [1]
    empty = rotated_nms(torch.zeros(0, 7), torch.zeros(0), 0.2)
    assert empty.shape == (0,) and empty.dtype == torch.int64


def _cfg(**kw):
    c = EasyDict(NMS_TYPE='nms_gpu', NMS_THRESH=0.2, NMS_PRE_MAXSIZE=1000, NMS_POST_MAXSIZE=83)
    c.update(kw)
    return c


def test_class_agnostic_nms_semantics():
    b = _random_boxes(300, 3, spread=20)
    scores = np.random.default_rng(4).random(300)
    bt, st = torch.from_numpy(b).float(), torch.from_numpy(scores).float()
    cfg = _cfg(NMS_PRE_MAXSIZE=120, NMS_POST_MAXSIZE=30)
    sel, sel_scores = class_agnostic_nms(st, bt, cfg, score_thresh=0.3)
    # reference: mask, top-k, greedy NMS, cut; indices back into the input
    idx = np.nonzero(scores.astype(np.float32) >= np.float32(0.3))[0]
    sub = _reference_nms(b[idx].astype(np.float32).astype(np.float64),
                         scores.astype(np.float32)[idx].tolist(), 0.2, 120, 30)
    assert sel.tolist() == idx[sub].tolist()
    assert torch.equal(sel_scores, st[sel])
    assert len(sel) == 30
    # nothing above the threshold
    sel, sel_scores = class_agnostic_nms(st, bt, cfg, score_thresh=2.0)
    assert sel.shape == (0,) and sel_scores.shape == (0,)
    # no threshold at all
    sel, _ = class_agnostic_nms(st, bt, cfg)
    assert sel.tolist() == _reference_nms(b.astype(np.float32).astype(np.float64),
                                          scores.astype(np.float32).tolist(), 0.2, 120, 30)


def test_class_agnostic_nms_axis_aligned_and_config_errors():
    # two squares rotated 45 deg: rotated IoU 1; axis-aligned NMS sees them as plain squares, also IoU 1;
    # a square vs the same square shifted so that only the rotated shapes overlap a lot
    b = torch.tensor([[0, 0, 0, 2, 2, 1, math.pi / 4], [1.2, 0, 0, 2, 2, 1, math.pi / 4]])
    s = torch.tensor([0.9, 0.8])
    rot_iou = boxes_bev_iou(b, b)[0, 1].item()
    aa = b.clone()
    aa[:, 6] = 0
    aa_iou = boxes_bev_iou(aa, aa)[0, 1].item()
    thresh = (rot_iou + aa_iou) / 2
    assert abs(rot_iou - aa_iou) > 0.05
    n_rot = len(class_agnostic_nms(s, b, _cfg(NMS_THRESH=thresh))[0])
    n_aa = len(class_agnostic_nms(s, b, _cfg(NMS_THRESH=thresh, NMS_TYPE='nms_normal_gpu'))[0])
    assert {n_rot, n_aa} == {1, 2} and (n_rot == 1) == (rot_iou > thresh)
    with pytest.raises(ValueError, match='NMS_TYPE'):
        class_agnostic_nms(s, b, _cfg(NMS_TYPE='nms_cpu'))
    with pytest.raises(KeyError, match='NMS_THRESH'):
        class_agnostic_nms(s, b, {'NMS_TYPE': 'nms_gpu', 'NMS_PRE_MAXSIZE': 10, 'NMS_POST_MAXSIZE': 5})


def test_class_agnostic_nms_reproduces_openpcdet_reference():
    """OpenPCDet's own NMS calls on the reference batch (eval_bncal: no score ties, see its README)."""
    import reference_utils as ru
    if not (ru.REFERENCE / 'pcdet_ref_outputs.pt').exists():
        pytest.skip('OpenPCDet reference outputs not available')
    ref = ru.load_ref_outputs()
    cfg = EasyDict(ref['meta']['post_processing']['NMS_CONFIG'])
    run = ref['eval_bncal']
    for h in range(6):
        for s in range(2):
            dec, call = run['decoded_pre_nms'][h][s], run['nms_calls'][2 * h + s]
            selected, scores = class_agnostic_nms(dec['pred_scores'], dec['pred_boxes'], cfg)
            assert torch.equal(selected, call['selected']), (h, s)
            assert torch.equal(scores, dec['pred_scores'][call['selected']])
            if h == 0:  # the whole kept list before the post-NMS cut (one head: each call is slow-ish)
                order = torch.sort(dec['pred_scores'], descending=True, stable=True)[1]
                keep = rotated_nms(dec['pred_boxes'][order], dec['pred_scores'][order], cfg.NMS_THRESH)
                assert torch.equal(keep, call['keep']), (h, s)
