"""A Distiller training step with the paper's RDD config (every key at its default) on the tiny test configs:
forward + backward on CPU, also when one sample of the batch has no proposal."""
import torch

from rdd.distill.rdd import heatmap_proposals
from test_distill_helpers import build_distiller, kd_cfg, make_batch

PAPER = [{'NAME': 'RDDLoss', 'WEIGHT': 1.0}]  # DESIGN.md 4.1 defaults


def test_paper_config_needs_no_decoded_boxes(tiny_teacher_ckpt):
    d = build_distiller(kd_cfg(tiny_teacher_ckpt, losses=PAPER))
    assert not d.plan.teacher_boxes and not d.plan.student_boxes  # proposals come from the raw heatmaps


def test_train_step_forward_backward(tiny_teacher_ckpt):
    cfg = kd_cfg(tiny_teacher_ckpt, losses=PAPER)
    d = build_distiller(cfg).train()
    ret, tb, _ = d(make_batch(cfg))
    assert torch.isfinite(ret['loss'])
    assert tb['kd/RDDLoss/rdd_pairs'] > 0 and tb['kd/RDDLoss/rdd_kept_fraction'] > 0
    assert tb['kd/RDDLoss'] == tb['kd/RDDLoss/rdd_loss'] > 0
    ret['loss'].backward()
    missing = [n for n, p in d.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    psi = {n: p for n, p in d.named_parameters() if n.startswith('kd_losses.RDDLoss.psi.')}
    assert len(psi) == 3 and all(p.grad.abs().sum() > 0 for p in psi.values())
    assert all(p.grad is None for p in d.teacher.parameters())


def test_train_step_with_a_sample_without_proposals(tiny_teacher_ckpt):
    """Sample 1's heatmaps (teacher and student) are pushed below SCORE_THRESH after the forwards: the step runs
    through the Distiller's own pieces (teacher forward, student forward, KD forward, backward)."""
    cfg = kd_cfg(tiny_teacher_ckpt, losses=PAPER)
    d = build_distiller(cfg).train()
    batch = make_batch(cfg, empty_sample=1)
    teacher_out = d.forward_teacher(batch)
    ret, _, _, student_out = d.forward_student(dict(batch))
    for out in (teacher_out, student_out):
        for maps in out['pred_dicts']:
            hm = maps['hm']
            maps['hm'] = torch.cat([hm[:1], hm[1:] * 0 - 20.0])  # sample 0 keeps its graph
    from rdd.distill.context import ModelFacts
    for out, side in ((teacher_out, ModelFacts.from_model(d.teacher)), (student_out, ModelFacts.from_model(d.student))):
        props = heatmap_proposals(out['pred_dicts'], side.head, side.grid)
        assert len(props) > 0 and not bool((props.batch_idx == 1).any())
    loss_kd, tb = d.kd_forward(teacher_out, student_out, batch)
    assert torch.isfinite(loss_kd) and tb['kd/RDDLoss'] > 0 and tb['kd/RDDLoss/rdd_pairs'] > 0
    (ret['loss'] + loss_kd).backward()
    grads = [p.grad for n, p in d.named_parameters() if n.startswith('kd_losses.')]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.student.backbone_2d.parameters())
