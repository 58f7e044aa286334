"""CenterPoint head (OpenPCDet ``CenterHead``: same modules, parameter names, targets, losses and decoding).

Differences from OpenPCDet, all deliberate: target assignment never rewrites the caller's ``gt_boxes``;
``get_loss`` keeps the raw heatmap logits in ``forward_ret_dict['pred_dicts']`` (it does not overwrite
``hm`` with the sigmoid); NaN regression targets are ignored instead of turning the loss into NaN; class-id
mapping tensors follow the device of the predictions (no ``.cuda()``).
"""
import copy

import numpy as np
import torch
from easydict import EasyDict
from torch import nn
from torch.nn.init import kaiming_normal_

from rdd.geometry import BEVGrid
from rdd.models.registries import DENSE_HEADS
from rdd.ops.rotated_iou import class_agnostic_nms

from . import centernet_utils
from .targets import TargetParams, assign_targets
from .losses import FocalLossCenterNet, RegLossCenterNet

# ``NMS_CONFIG.NMS_TYPE: none``: the paper's evaluation (CenterPoint's): no NMS, the MAX_OBJ_PER_SAMPLE best-scored
# boxes of a sample over all head groups. OpenPCDet refuses this value (class_agnostic_nms has no 'none').
NO_NMS = 'none'


class SeparateHead(nn.Module):
    """One head group: for every output name a stack of (num_conv - 1) x [conv3x3, BN, ReLU] + conv3x3.

    Args:
        input_channels: channels of the shared feature map.
        sep_head_dict: ordered {name: {'out_channels': int, 'num_conv': int}}; the module is registered
            under ``name`` (OpenPCDet state_dict keys ``<name>.<i>.0.weight`` ... ``<name>.<last>.weight``).
        init_bias: bias of the last conv of outputs whose name contains 'hm' (default -2.19, prior 0.1).
        use_bias: bias in the hidden convs (OpenPCDet ``USE_BIAS_BEFORE_NORM``).
    Outputs other than 'hm' get kaiming-normal conv weights and zero biases; 'hm' keeps PyTorch's default init.
    """

    def __init__(self, input_channels, sep_head_dict, init_bias=-2.19, use_bias=False):
        super().__init__()
        self.sep_head_dict = sep_head_dict
        for name, spec in sep_head_dict.items():
            layers = [nn.Sequential(
                nn.Conv2d(input_channels, input_channels, kernel_size=3, stride=1, padding=1, bias=use_bias),
                nn.BatchNorm2d(input_channels),
                nn.ReLU(),
            ) for _ in range(spec['num_conv'] - 1)]
            layers.append(nn.Conv2d(input_channels, spec['out_channels'], kernel_size=3, stride=1, padding=1,
                                    bias=True))
            branch = nn.Sequential(*layers)
            if 'hm' in name:
                branch[-1].bias.data.fill_(init_bias)
            else:
                for m in branch.modules():
                    if isinstance(m, nn.Conv2d):
                        kaiming_normal_(m.weight.data)
                        if m.bias is not None:
                            nn.init.constant_(m.bias, 0)
            self.add_module(name, branch)

    def forward(self, x):
        """x (B, C, H, W) -> {name: (B, out_channels, H, W)} in ``sep_head_dict`` order."""
        return {name: getattr(self, name)(x) for name in self.sep_head_dict}


NMS_TYPES = ('nms_gpu', 'nms_normal_gpu', NO_NMS)


def check_nms_type(nms_type):
    """ValueError naming ``POST_PROCESSING.NMS_CONFIG.NMS_TYPE`` unless it is one of :data:`NMS_TYPES`."""
    if nms_type in NMS_TYPES:
        return
    hint = {'circle_nms': ' (OpenPCDet does not support circle_nms either)',
            None: f' (YAML null; for no NMS write {NO_NMS!r})'}.get(nms_type, '')
    raise ValueError(f'DENSE_HEAD.POST_PROCESSING.NMS_CONFIG.NMS_TYPE {nms_type!r} is not supported{hint}; '
                     f'use one of {list(NMS_TYPES)}')


def _merge_post_cfg(base, override, path='POST_PROCESSING'):
    """Deep-merge ``override`` into a copy of ``base``; keys absent from ``base`` are an error naming them."""
    merged = EasyDict(copy.deepcopy(dict(base)))
    for key, value in (override or {}).items():
        if key not in merged:
            raise KeyError(f'post_cfg key {path}.{key} is not a key of the head POST_PROCESSING config '
                           f'(known: {sorted(merged.keys())})')
        if isinstance(value, dict):
            merged[key] = _merge_post_cfg(merged[key], value, f'{path}.{key}')
        else:
            merged[key] = value
    return merged


@DENSE_HEADS.register()
class CenterHead(nn.Module):
    """CenterPoint multi-group head.

    Args:
        model_cfg: ``MODEL.DENSE_HEAD`` (EasyDict): CLASS_NAMES_EACH_HEAD, SHARED_CONV_CHANNEL,
            USE_BIAS_BEFORE_NORM, NUM_HM_CONV, SEPARATE_HEAD_CFG (HEAD_ORDER, HEAD_DICT),
            TARGET_ASSIGNER_CONFIG, LOSS_CONFIG.LOSS_WEIGHTS, POST_PROCESSING.
        input_channels: channels of ``spatial_features_2d``.
        num_class, class_names: the detector's classes (labels are 1-based into ``class_names``).
        grid_size: voxel grid (x, y, z); point_cloud_range: 6 floats (m); voxel_size: 3 floats (m).
        predict_boxes_when_training: also decode boxes in training (into ``final_box_dicts``).
    """

    def __init__(self, model_cfg, input_channels, num_class, class_names, grid_size, point_cloud_range, voxel_size,
                 predict_boxes_when_training=False):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        self.grid_size = grid_size
        self.point_cloud_range = point_cloud_range
        self.voxel_size = voxel_size
        self.feature_map_stride = model_cfg.TARGET_ASSIGNER_CONFIG.get('FEATURE_MAP_STRIDE', None)
        self.grid = BEVGrid(tuple(np.asarray(point_cloud_range, dtype=np.float64).tolist()),
                            tuple(float(v) for v in voxel_size), self.feature_map_stride)
        self.class_names = list(class_names)
        self.class_names_each_head = []
        self.class_id_mapping_each_head = []  # plain attributes (not buffers): 0-based global ids per head
        for head_names in model_cfg.CLASS_NAMES_EACH_HEAD:
            names = [x for x in head_names if x in self.class_names]
            self.class_names_each_head.append(names)
            self.class_id_mapping_each_head.append(
                torch.tensor([self.class_names.index(x) for x in names], dtype=torch.long))
        total = sum(len(x) for x in self.class_names_each_head)
        if total != len(self.class_names):
            raise ValueError(f'DENSE_HEAD.CLASS_NAMES_EACH_HEAD covers {total} of the {len(self.class_names)} '
                             f'classes {self.class_names}: {self.class_names_each_head}')
        check_nms_type(model_cfg.POST_PROCESSING.NMS_CONFIG.NMS_TYPE)

        use_bias = model_cfg.get('USE_BIAS_BEFORE_NORM', False)
        self.shared_conv = nn.Sequential(
            nn.Conv2d(input_channels, model_cfg.SHARED_CONV_CHANNEL, 3, stride=1, padding=1, bias=use_bias),
            nn.BatchNorm2d(model_cfg.SHARED_CONV_CHANNEL),
            nn.ReLU(),
        )
        self.separate_head_cfg = model_cfg.SEPARATE_HEAD_CFG
        self.heads_list = nn.ModuleList()
        for names in self.class_names_each_head:
            head_dict = copy.deepcopy(self.separate_head_cfg.HEAD_DICT)
            head_dict['hm'] = dict(out_channels=len(names), num_conv=model_cfg.NUM_HM_CONV)
            self.heads_list.append(SeparateHead(model_cfg.SHARED_CONV_CHANNEL, head_dict,
                                                init_bias=model_cfg.get('INIT_BIAS', -2.19), use_bias=use_bias))
        self.predict_boxes_when_training = predict_boxes_when_training
        self.forward_ret_dict = {}
        self.hm_loss_func = FocalLossCenterNet()
        self.reg_loss_func = RegLossCenterNet()

    def assign_targets(self, gt_boxes, feature_map_size, assigned_cells=None):
        """gt_boxes (B, M, 10) (not modified), feature_map_size (H, W), optional ``assigned_cells`` (B, M') (the
        responsible cell of each GT row, -1 = CenterPoint's own) -> target dict (see :mod:`.targets`)."""
        cfg = self.model_cfg.TARGET_ASSIGNER_CONFIG
        params = TargetParams(num_max_objs=cfg.NUM_MAX_OBJS, gaussian_overlap=cfg.GAUSSIAN_OVERLAP,
                              min_radius=cfg.MIN_RADIUS)
        return assign_targets(gt_boxes, self.class_names, self.class_names_each_head, feature_map_size, self.grid,
                              params, assigned_cells=assigned_cells)

    @staticmethod
    def sigmoid(x):
        """Heatmap probabilities for the focal loss: sigmoid clamped to [1e-4, 1 - 1e-4]."""
        return torch.clamp(x.sigmoid(), min=1e-4, max=1 - 1e-4)

    def get_loss(self):
        """Loss of the last training forward -> (loss (), tb_dict with hm_loss_head_i, loc_loss_head_i, rpn_loss)."""
        pred_dicts = self.forward_ret_dict['pred_dicts']
        targets = self.forward_ret_dict['target_dicts']
        weights = self.model_cfg.LOSS_CONFIG.LOSS_WEIGHTS
        tb_dict = {}
        loss = 0
        for idx, pred in enumerate(pred_dicts):
            hm_prob = self.sigmoid(pred['hm'])
            hm_loss = self.hm_loss_func(hm_prob, targets['heatmaps'][idx]) * weights['cls_weight']
            pred_boxes = torch.cat([pred[name] for name in self.separate_head_cfg.HEAD_ORDER], dim=1)
            reg_loss = self.reg_loss_func(pred_boxes, targets['masks'][idx], targets['inds'][idx],
                                          targets['target_boxes'][idx])
            loc_loss = (reg_loss * reg_loss.new_tensor(weights['code_weights'])).sum() * weights['loc_weight']
            loss = loss + hm_loss + loc_loss
            tb_dict['hm_loss_head_%d' % idx] = hm_loss.item()
            tb_dict['loc_loss_head_%d' % idx] = loc_loss.item()
        tb_dict['rpn_loss'] = loss.item()
        return loss, tb_dict

    def decode_head(self, idx, pred_dict, post_cfg):
        """Pre-NMS candidates of head ``idx`` from its raw maps -> list per sample (centernet_utils decode)."""
        maps = {'heatmap': pred_dict['hm'].sigmoid(), 'rot_cos': pred_dict['rot'][:, 0:1],
                'rot_sin': pred_dict['rot'][:, 1:2], 'center': pred_dict['center'], 'center_z': pred_dict['center_z'],
                'dim': pred_dict['dim'].exp(),
                'vel': pred_dict['vel'] if 'vel' in self.separate_head_cfg.HEAD_ORDER else None}
        params = centernet_utils.DecodeParams(k=post_cfg.MAX_OBJ_PER_SAMPLE, score_thresh=post_cfg.SCORE_THRESH,
                                              post_center_limit_range=post_cfg.POST_CENTER_LIMIT_RANGE)
        return centernet_utils.decode_bbox_from_heatmap(maps, self.grid, params)

    def decode(self, pred_dicts, batch_size, post_cfg=None):
        """Full post-processing: per head top-K decode, score/range filter, class-agnostic rotated NMS, concat.

        With ``NMS_CONFIG.NMS_TYPE: none`` (the paper's evaluation) no NMS runs: the heads' candidates are
        concatenated and the ``MAX_OBJ_PER_SAMPLE`` best-scored kept, in descending score order (the other
        ``NMS_CONFIG`` keys are then not used, as OpenPCDet ignores them for ``circle_nms``).

        Args:
            pred_dicts: list over heads of raw maps (``hm`` as logits), as in ``forward_ret_dict['pred_dicts']``.
            batch_size: int.
            post_cfg: optional dict overriding keys of ``POST_PROCESSING``, e.g.
                ``{'SCORE_THRESH': 0.3, 'MAX_OBJ_PER_SAMPLE': 500, 'NMS_CONFIG': {'NMS_THRESH': 0.2,
                'NMS_POST_MAXSIZE': 100}}``; unknown keys raise KeyError.
        Returns:
            list over samples of dicts: ``pred_boxes`` (N, 9), ``pred_scores`` (N,), ``pred_labels`` (N,) int64,
            1-based global classes; heads concatenated in order, each in descending score order after NMS.
        """
        cfg = _merge_post_cfg(self.model_cfg.POST_PROCESSING, post_cfg)
        check_nms_type(cfg.NMS_CONFIG.NMS_TYPE)
        use_nms = cfg.NMS_CONFIG.NMS_TYPE != NO_NMS
        ret = [{'pred_boxes': [], 'pred_scores': [], 'pred_labels': []} for _ in range(batch_size)]
        for idx, pred_dict in enumerate(pred_dicts):
            for b, cand in enumerate(self.decode_head(idx, pred_dict, cfg)):
                mapping = self.class_id_mapping_each_head[idx].to(cand['pred_labels'].device)
                labels = mapping[cand['pred_labels'].long()]
                boxes, scores = cand['pred_boxes'], cand['pred_scores']
                if use_nms and scores.numel() > 0:
                    selected, scores = class_agnostic_nms(box_scores=scores, box_preds=boxes,
                                                          nms_config=cfg.NMS_CONFIG, score_thresh=None)
                    boxes, labels = boxes[selected], labels[selected]
                ret[b]['pred_boxes'].append(boxes)
                ret[b]['pred_scores'].append(scores)
                ret[b]['pred_labels'].append(labels)
        for b in range(batch_size):
            ret[b] = {'pred_boxes': torch.cat(ret[b]['pred_boxes'], dim=0),
                      'pred_scores': torch.cat(ret[b]['pred_scores'], dim=0),
                      'pred_labels': torch.cat(ret[b]['pred_labels'], dim=0).long() + 1}
            if not use_nms:  # the best MAX_OBJ_PER_SAMPLE of the sample over all head groups, by score
                order = torch.argsort(ret[b]['pred_scores'], descending=True, stable=True)
                order = order[:int(cfg.MAX_OBJ_PER_SAMPLE)]
                ret[b] = {k: v[order] for k, v in ret[b].items()}
        return ret

    def forward(self, data_dict):
        """Uses ``spatial_features_2d`` (B, C, H, W) and, in training, ``gt_boxes`` (B, M, 10) and the optional
        ``gt_assigned_cells`` (B, M') int64 (a label-assignment hook: the cell ``row * W + col`` responsible for
        each GT row, -1 = the cell holding its centre; set by ``rdd.distill`` ``LADLoss``).

        Training: stores ``forward_ret_dict = {'pred_dicts', 'target_dicts'}`` (raw maps, hm as logits).
        Eval (or ``predict_boxes_when_training``): adds ``final_box_dicts`` (see :meth:`decode`).
        """
        features = data_dict['spatial_features_2d']
        x = self.shared_conv(features)
        pred_dicts = [head(x) for head in self.heads_list]
        if self.training:
            if 'gt_boxes' not in data_dict:
                raise KeyError("CenterHead in training mode needs data_dict['gt_boxes'] (B, M, 10)")
            self.forward_ret_dict['target_dicts'] = self.assign_targets(
                data_dict['gt_boxes'], features.shape[2:], data_dict.get('gt_assigned_cells'))
        self.forward_ret_dict['pred_dicts'] = pred_dicts
        if not self.training or self.predict_boxes_when_training:
            data_dict['final_box_dicts'] = self.decode(pred_dicts, data_dict.get('batch_size', features.shape[0]))
        return data_dict
