"""Distiller built from parts: toy student / teacher detectors and a toy KD loss, no config, no checkpoint."""
import pytest
import torch
from torch import nn

from rdd.distill import Distiller


class ToyBackbone(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 1)

    def forward(self, batch):
        batch['spatial_features_2d'] = self.conv(batch['image'])
        return batch


class ToyHead(nn.Module):
    """CenterHead's attribute names: ``shared_conv``, ``heads_list`` (one group with an ``hm`` map)."""

    def __init__(self, channels, rewrite_labels=False):
        super().__init__()
        self.shared_conv = nn.Conv2d(channels, 2, 1)
        self.heads_list = nn.ModuleList([ToyGroup()])
        self.forward_ret_dict, self.rewrite_labels = {}, rewrite_labels

    def forward(self, batch):
        preds = [group(self.shared_conv(batch['spatial_features_2d'])) for group in self.heads_list]
        self.forward_ret_dict = {'pred_dicts': preds, 'target_dicts': {'labels': [batch['gt_boxes'][..., -1].clone()]}}
        if self.rewrite_labels:  # OpenPCDet's CenterHead rewrites the labels of the gt_boxes it is given
            batch['gt_boxes'][..., -1] = -1.0
        return batch


class ToyGroup(nn.Module):
    def __init__(self):
        super().__init__()
        self.hm = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return {'hm': self.hm(x)}


class ToyDetector(nn.Module):
    def __init__(self, channels, rewrite_labels=False):
        super().__init__()
        self.backbone, self.dense_head = ToyBackbone(channels), ToyHead(channels, rewrite_labels)
        self.module_list = [self.backbone, self.dense_head]
        self.register_buffer('global_step', torch.zeros(1, dtype=torch.long))

    def update_global_step(self):
        self.global_step += 1

    def forward(self, batch):
        for module in self.module_list:
            batch = module(batch)
        loss = self.dense_head.forward_ret_dict['pred_dicts'][0]['hm'].pow(2).mean()
        return {'loss': loss}, {'det': float(loss.detach())}, {}


class FeatureMSE(nn.Module):
    """A KD loss: adapted student features vs the teacher's (the contract of rdd.distill.registry)."""
    REQUIRES = ('features',)

    def __init__(self, s_ch, t_ch):
        super().__init__()
        self.adapter = nn.Conv2d(s_ch, t_ch, 1)

    def forward(self, teacher, student, batch):
        diff = self.adapter(student['spatial_features_2d']) - teacher['spatial_features_2d']
        return diff.pow(2).mean(), {'n': 1.0}


def make(weights=None):
    torch.manual_seed(0)
    losses = {'mse_b': FeatureMSE(2, 3), 'mse_a': FeatureMSE(2, 3)}  # list order b, a
    return Distiller(ToyDetector(2), ToyDetector(3, rewrite_labels=True), losses, weights, loss_det_weight=0.5)


def test_built_parts_train_like_a_detector():
    d = make({'mse_b': 2.0})
    batch = {'image': torch.randn(2, 1, 4, 4), 'gt_boxes': torch.ones(2, 3, 10), 'batch_size': 2}
    d.train()
    assert not d.teacher.training and all(not p.requires_grad for p in d.teacher.parameters())
    ret, tb, _ = d(batch)
    assert torch.equal(batch['gt_boxes'], torch.ones(2, 3, 10))  # the teacher rewrote its own copy only
    assert torch.equal(d.student.dense_head.forward_ret_dict['target_dicts']['labels'][0], torch.ones(2, 3))
    assert tb['loss'] == pytest.approx(0.5 * tb['loss_det'] + 2.0 * tb['kd/mse_b'] + 1.0 * tb['kd/mse_a'], rel=1e-6)
    assert tb['kd/mse_b/n'] == 1.0 and d.kd_names == ['mse_b', 'mse_a'] and d.kd_weights == [2.0, 1.0]
    ret['loss'].backward()
    assert all(p.grad is not None for p in d.parameters())
    assert all(p.grad is None for p in d.teacher.parameters())
    assert [k.split('.')[1] for k in d.state_dict() if k.startswith('kd_losses.')][:1] == ['mse_a']  # key order
    assert not any(k.startswith('teacher') or '._teacher' in k for k in d.state_dict())
    assert d.plan.feature_keys == ('spatial_features_2d',) and not d.plan.teacher_boxes


def test_eval_forward_is_the_students():
    d = make().eval()
    batch = {'image': torch.randn(1, 1, 4, 4), 'gt_boxes': torch.ones(1, 3, 10)}
    out, _, _ = d(dict(batch))
    ref, _, _ = d.student(dict(batch))
    assert torch.equal(out['loss'], ref['loss'])
