"""CenterHead against OpenPCDet's own outputs (../shared/compat/reference, tolerances from its README).

First the head alone (fed OpenPCDet's ``spatial_features_2d``, loaded with the checkpoint's ``dense_head.*``),
then the whole teacher: train-mode head outputs / targets / losses, eval-mode heatmap logits, and with the
calibrated BN statistics (``eval_bncal``) the decoded pre-NMS candidates and the final detections, joined
order-insensitively on (head, sample, in-head label, cell index).
"""
import math

import numpy as np
import pytest
import torch

import reference_utils as ru

pytestmark = pytest.mark.skipif(not (ru.REFERENCE / 'pcdet_ref_outputs.pt').exists(),
                                reason='OpenPCDet reference outputs not found')

CKPT = ru.REFERENCE / 'openpcdet_cbgs_voxel0075_res3d_centerpoint.random.pth'
HEAD_KEYS = ['center', 'center_z', 'dim', 'rot', 'vel', 'hm']


@pytest.fixture(scope='module')
def ref():
    return ru.load_ref_outputs()


@pytest.fixture(scope='module')
def batch():
    return ru.load_ref_batch()


@pytest.fixture(scope='module')
def teacher():
    model = ru.build_reference_teacher()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return model, state


def _rel(mine, want):
    return float((mine.detach() - want).abs().max() / want.abs().max())


def _check_train_head(head, ref, rel_tol):
    """Raw outputs, targets and losses of a head after a train forward on the reference batch."""
    tr = ref['train']
    for h, want in enumerate(tr['pred_dicts']):
        for key in HEAD_KEYS:
            assert _rel(head.forward_ret_dict['pred_dicts'][h][key], want[key]) <= rel_tol, (h, key)
    targets = head.forward_ret_dict['target_dicts']
    for h in range(len(tr['pred_dicts'])):
        assert torch.equal(targets['inds'][h], tr['target_dicts']['inds'][h]), h
        assert torch.equal(targets['masks'][h], tr['target_dicts']['masks'][h]), h
        torch.testing.assert_close(targets['heatmaps'][h], tr['target_dicts']['heatmaps'][h], atol=1e-6, rtol=0)
        torch.testing.assert_close(targets['target_boxes'][h], tr['target_dicts']['target_boxes'][h],
                                   atol=1e-6, rtol=1e-6)
    loss, tb = head.get_loss()
    assert loss.item() == pytest.approx(tr['loss'].item(), rel=1e-4)
    for key, value in tb.items():
        assert value == pytest.approx(tr['tb_dict'][key], rel=1e-4), key
    assert len(tb) == 13
    return loss


def test_head_alone_train_matches_openpcdet(ref, batch):
    from rdd.models.checkpoint import read_model_state
    from rdd.models.dense_heads import CenterHead

    cfg = ru.model_cfg_dict('teacher_0075', point_cloud_range=ru.REF_RANGE)
    head = CenterHead(cfg.MODEL.DENSE_HEAD, 512, 10, ru.CLASS_NAMES, np.array([576, 576, 40]),
                      np.array(ru.REF_RANGE, dtype=np.float32), [0.075, 0.075, 0.2])
    state = {k[len('dense_head.'):]: v for k, v in read_model_state(str(CKPT)).items()
             if k.startswith('dense_head.')}
    head.load_state_dict(state, strict=True)
    head.train()
    gt = torch.from_numpy(batch['gt_boxes'].astype(np.float32))
    head({'spatial_features_2d': ref['train']['spatial_features_2d'].clone(), 'gt_boxes': gt, 'batch_size': 2})
    assert torch.equal(gt, ref['train']['gt_boxes_before'])  # no in-place label rewrite
    # same input and ops: only the dense-conv thread split differs
    _check_train_head(head, ref, rel_tol=1e-4)


def test_teacher_train_head_matches_openpcdet(teacher, ref, batch):
    model, state = teacher
    ru.fresh_reference_teacher(model, state).train()
    torch.manual_seed(0)
    data = ru.ref_batch_dict(batch, train=True)
    gt = data['gt_boxes']
    model(data)
    assert torch.equal(gt, ref['train']['gt_boxes_before'])
    loss = _check_train_head(model.dense_head, ref, rel_tol=2e-3)
    assert torch.isfinite(loss)


def _eval_run(model, state, batch, bn_buffers=None):
    ru.fresh_reference_teacher(model, state)
    if bn_buffers is not None:
        current = model.state_dict()
        for key, value in bn_buffers.items():
            current[key].copy_(value)
    model.eval()
    with torch.no_grad():
        pred_dicts, _ = model(ru.ref_batch_dict(batch, train=False))
    return pred_dicts, model.dense_head.forward_ret_dict['pred_dicts']


def test_teacher_eval_hm_logits_match_openpcdet(teacher, ref, batch):
    model, state = teacher
    _, raw = _eval_run(model, state, batch)
    for h, want in enumerate(ref['eval']['hm_logits']):
        assert float((raw[h]['hm'] - want).abs().max()) <= 1e-5, h


def _angle_diff(a, b):
    return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi


def _box_key(box, score):
    # classes of one head share the box regression of a cell; the score tells them apart
    return box.numpy().tobytes() + score.numpy().tobytes()


def test_teacher_eval_bncal_decoding_and_detections_match_openpcdet(teacher, ref, batch):
    model, state = teacher
    want = ref['eval_bncal']
    final, raw = _eval_run(model, state, batch, bn_buffers=want['bn_buffers'])
    for h, logits in enumerate(want['hm_logits']):
        assert _rel(raw[h]['hm'], logits) <= 2e-3, h

    head = model.dense_head
    post = head.model_cfg.POST_PROCESSING
    n_common = n_union = 0
    my_key_of = [dict() for _ in range(2)]  # per sample: (box, score) bytes -> (head, label, cell)
    for h, pred in enumerate(raw):
        cands = head.decode_head(h, pred, post)
        for s in range(2):
            r, c = want['decoded_pre_nms'][h][s], cands[s]
            rk = {(int(l), int(i)): j for j, (l, i) in enumerate(zip(r['pred_labels'], r['cell_index']))}
            mk = {(int(l), int(i)): j for j, (l, i) in enumerate(zip(c['pred_labels'], c['cell_index']))}
            for j, key in enumerate(zip(c['pred_labels'].tolist(), c['cell_index'].tolist())):
                my_key_of[s][_box_key(c['pred_boxes'][j], c['pred_scores'][j])] = (h,) + key
            common = sorted(set(rk) & set(mk))
            n_common += len(common)
            n_union += len(set(rk) | set(mk))
            ri = torch.tensor([rk[k] for k in common])
            mi = torch.tensor([mk[k] for k in common])
            rb, mb = r['pred_boxes'][ri], c['pred_boxes'][mi]
            assert float((r['pred_scores'][ri] - c['pred_scores'][mi]).abs().max()) <= 1e-3
            assert float((rb[:, [0, 1, 2, 7, 8]] - mb[:, [0, 1, 2, 7, 8]]).abs().max()) <= 3e-2
            assert float(_angle_diff(rb[:, 6], mb[:, 6]).abs().max()) <= 3e-2
            assert float((rb[:, 3:6].log() - mb[:, 3:6].log()).abs().max()) <= 2e-2
    print(f'pre-NMS candidates in common: {n_common} / {n_union}')
    assert n_common >= 0.999 * n_union, (n_common, n_union)

    for s in range(2):
        ref_keys = set()
        for h in range(len(raw)):
            r = want['decoded_pre_nms'][h][s]
            for j in want['nms_calls'][2 * h + s]['selected'].tolist():
                ref_keys.add((h, int(r['pred_labels'][j]), int(r['cell_index'][j])))
        mine = final[s]
        assert mine['pred_boxes'].shape[0] == want['final_pred_dicts'][s]['pred_boxes'].shape[0] == 498
        my_keys = {my_key_of[s][_box_key(b, sc)] for b, sc in zip(mine['pred_boxes'], mine['pred_scores'])}
        assert len(my_keys) == mine['pred_boxes'].shape[0]
        print(f'sample {s}: {len(my_keys)} final detections, {len(my_keys ^ ref_keys)} keys differ')
        assert len(my_keys ^ ref_keys) <= 4, sorted(my_keys ^ ref_keys)
        if my_keys == ref_keys:  # then the 1-based global labels agree too
            assert torch.equal(torch.sort(mine['pred_labels'])[0],
                               torch.sort(want['final_pred_dicts'][s]['pred_labels'])[0])
