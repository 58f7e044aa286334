"""Seeded distillation is bit-reproducible, and the Distiller's cheaper box decoding changes no kept box."""
import pytest
import torch

from rdd.distill.feature_taps import decode_post_cfg
from rdd.distill.feature_taps import decode_boxes, raw_head_maps
from test_distill_helpers import build_distiller, kd_cfg, make_batch


def _run(cfg, steps=2):
    torch.manual_seed(123)
    d = build_distiller(cfg, seed=7)
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=1e-2)
    d.train()
    records = []
    for i in range(steps):
        ret, tb, _ = d(make_batch(cfg, seed=i))
        opt.zero_grad()
        ret['loss'].backward()
        opt.step()
        records.append(tb)
    return records, d.state_dict()


def test_two_seeded_distillation_runs_are_identical(tiny_teacher_ckpt):
    cfg = kd_cfg(tiny_teacher_ckpt)  # RDD + logit KD + FitNet + RoI mimic
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the demo's setting; other thread counts reorder float sums
    try:
        (tb1, s1), (tb2, s2) = _run(cfg), _run(cfg)
    finally:
        torch.set_num_threads(threads)
    assert tb1[0]['kd/RDDLoss/rdd_pairs'] > 0 and tb1[0]['kd/RDDLoss/rdd_kept_fraction'] > 0  # RDD really distils something
    assert tb1 == tb2  # every loss term and count, bit for bit
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def _teacher_maps(d, cfg):
    """The teacher's raw head maps on a batch (no decoding)."""
    batch = dict(make_batch(cfg, seed=3))
    teacher = d.teacher
    with torch.no_grad():
        for module in teacher.module_list:
            if module is teacher.dense_head:
                break
            batch = module(batch)
        return raw_head_maps(teacher.dense_head, batch['spatial_features_2d']), batch['batch_size']


def test_score_prefilter_keeps_every_box_at_or_above_the_lowest_used_score(tiny_teacher_ckpt):
    cfg = kd_cfg(tiny_teacher_ckpt)
    d = build_distiller(cfg)
    maps, bs = _teacher_maps(d, cfg)
    for m in maps:  # spread the random teacher's scores over (0, 1): many boxes, overlapping, so NMS matters
        m['hm'] = (m['hm'] - m['hm'].mean()) * 50.0
    full = decode_boxes(d.teacher, maps, bs, None)
    scores = torch.cat([b['pred_scores'] for b in full]).sort().values
    assert scores.numel() > 20
    for min_score in (float(scores[scores.numel() // 2]), float(scores[-3])):  # ties: exactly a box's score
        post = decode_post_cfg(d.teacher, min_score)
        assert post is not None and post['SCORE_THRESH'] < min_score
        cheap = decode_boxes(d.teacher, maps, bs, post)
        for f, c in zip(full, cheap):
            keep = f['pred_scores'] >= min_score
            order_f = torch.argsort(f['pred_scores'][keep], stable=True)
            order_c = torch.argsort(c['pred_scores'], stable=True)
            assert c['pred_scores'].numel() == int(keep.sum())
            for key in ('pred_boxes', 'pred_scores', 'pred_labels'):
                assert torch.equal(f[key][keep][order_f], c[key][order_c]), key
    assert decode_post_cfg(d.teacher, 0.0) is None  # below the head's own threshold: no override
