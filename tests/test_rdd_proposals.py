"""Bilateral proposal generation: score filter, rotated NMS, per-source cap, union / merge, GT, empty inputs."""
import pytest
import torch

from rdd.distill.rdd.proposals import ProposalGenerator


def _boxes(xs, scores, labels=None, y=0.0, dx=2.0, dy=2.0):
    n = len(xs)
    b = torch.zeros(n, 9)
    b[:, 0] = torch.tensor(xs, dtype=torch.float32)
    b[:, 1] = y
    b[:, 3], b[:, 4], b[:, 5] = dx, dy, 1.5
    return {'pred_boxes': b, 'pred_scores': torch.tensor(scores, dtype=torch.float32),
            'pred_labels': torch.tensor(labels if labels is not None else [1] * n, dtype=torch.long)}


def _empty():
    return {'pred_boxes': torch.zeros(0, 9), 'pred_scores': torch.zeros(0),
            'pred_labels': torch.zeros(0, dtype=torch.long)}


def test_score_threshold_and_cap_keep_highest():
    gen = ProposalGenerator(score_thresh=0.3, nms_thresh=0.2, max_per_source=2, merge_iou=None)
    t = _boxes([0, 10, 20, 30, 40], [0.9, 0.2, 0.5, 0.35, 0.8], labels=[1, 2, 3, 4, 5])
    p = gen([t], [_empty()])
    assert p.boxes[:, 0].tolist() == [0.0, 40.0]
    assert p.labels.tolist() == [1, 5]
    assert p.sources[:, 0].all() and not p.sources[:, 1:].any()
    assert p.num_per_source.tolist() == [2, 0, 0]


def test_rotated_nms_suppresses_overlap_within_a_source():
    gen = ProposalGenerator(nms_thresh=0.2, max_per_source=100, merge_iou=None)
    t = _boxes([0.0, 0.5, 10.0], [0.6, 0.9, 0.5])  # first two overlap (IoU 0.6)
    p = gen([t], [_empty()])
    assert p.boxes[:, 0].tolist() == [0.5, 10.0]
    loose = ProposalGenerator(nms_thresh=0.7, merge_iou=None)([t], [_empty()])
    assert len(loose) == 3


def test_union_concatenates_sources_per_sample():
    gen = ProposalGenerator(merge_iou=None)
    t = [_boxes([0.0, 10.0], [0.9, 0.8]), _boxes([5.0], [0.7])]
    s = [_boxes([0.2, 20.0], [0.6, 0.5]), _empty()]
    p = gen(t, s)
    assert p.batch_idx.tolist() == [0, 0, 0, 0, 1]
    assert p.boxes[:, 0].tolist() == pytest.approx([0.0, 10.0, 0.2, 20.0, 5.0])
    assert p.sources.tolist() == [[True, False, False]] * 2 + [[False, True, False]] * 2 + [[True, False, False]]
    assert p.num_per_source.tolist() == [3, 2, 0]


def test_cross_source_duplicates_merge_into_teacher_box():
    gen = ProposalGenerator(merge_iou=0.5)
    t = [_boxes([0.0, 10.0], [0.9, 0.8], labels=[1, 2])]
    s = [_boxes([0.2, 20.0], [0.6, 0.5], labels=[3, 3])]  # first overlaps teacher box 0 (IoU ~0.82)
    p = gen(t, s)
    assert p.boxes[:, 0].tolist() == pytest.approx([0.0, 10.0, 20.0])
    assert p.labels.tolist() == [1, 2, 3]  # the teacher's box and label win
    assert p.sources.tolist() == [[True, True, False], [True, False, False], [False, True, False]]
    assert p.num_per_source.tolist() == [2, 2, 0]


def test_gt_source_drops_padding_and_requires_gt():
    gen = ProposalGenerator(use_gt=True, merge_iou=0.5)
    gt = torch.zeros(2, 3, 10)
    gt[0, 0, :7] = torch.tensor([0.1, 0.0, 0.0, 2.0, 2.0, 1.5, 0.0])
    gt[0, 0, 9] = 1
    gt[0, 1, :7] = torch.tensor([30.0, 0.0, 0.0, 2.0, 2.0, 1.5, 0.0])
    gt[0, 1, 9] = 9
    p = gen([_boxes([0.0], [0.9]), _empty()], [_empty(), _empty()], gt)
    assert p.boxes[:, 0].tolist() == pytest.approx([0.0, 30.0])
    assert p.labels.tolist() == [1, 9]
    assert p.sources.tolist() == [[True, False, True], [False, False, True]]
    with pytest.raises(ValueError, match='USE_GT'):
        gen([_empty()], [_empty()], None)


def test_empty_inputs_give_empty_set():
    gen = ProposalGenerator()
    p = gen([_empty(), _empty()], [_empty(), _boxes([0.0], [0.1])])  # the one box is below the threshold
    assert len(p) == 0 and p.boxes.shape == (0, 7) and p.sources.shape == (0, 3)
    assert len(gen([], [])) == 0


def test_outputs_are_detached():
    t = _boxes([0.0, 10.0], [0.9, 0.8])
    t['pred_boxes'].requires_grad_(True)
    p = ProposalGenerator()([t], [_empty()])
    assert not p.boxes.requires_grad


def test_from_config_reads_every_key():
    gen = ProposalGenerator.from_config({'SCORE_THRESH': 0.5, 'NMS_THRESH': None, 'MAX_PER_SOURCE': 3,
                                         'USE_GT': True, 'MERGE_IOU': None})
    assert (gen.score_thresh, gen.nms_thresh, gen.max_per_source, gen.use_gt, gen.merge_iou) == \
        (0.5, None, 3, True, None)
