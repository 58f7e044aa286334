"""CenterPoint losses (OpenPCDet ``loss_utils.FocalLossCenterNet`` / ``RegLossCenterNet`` semantics).

Both are pure functions of tensors; the ``nn.Module`` wrappers exist only so that a head can register them
under OpenPCDet's attribute names (``hm_loss_func``, ``reg_loss_func``); they hold no parameters.
"""
import torch
from torch import nn

from .centernet_utils import transpose_and_gather_feat


def focal_loss_centernet(pred, target, mask=None):
    """CornerNet-style penalty-reduced focal loss on a heatmap of probabilities.

    Args:
        pred: (B, C, H, W) probabilities in (0, 1) (callers clamp the sigmoid to [1e-4, 1 - 1e-4]).
        target: (B, C, H, W) gaussian heatmap in [0, 1]; cells equal to exactly 1 are positives.
        mask: optional (B, H, W) weights applied to every class channel.
    Returns:
        () loss: -(sum pos + sum neg) / num_pos, or -sum neg when there is no positive cell.
    """
    pos = target.eq(1).float()
    neg = target.lt(1).float()
    neg_weights = torch.pow(1 - target, 4)
    pos_loss = torch.log(pred) * torch.pow(1 - pred, 2) * pos
    neg_loss = torch.log(1 - pred) * torch.pow(pred, 2) * neg_weights * neg
    if mask is not None:
        mask = mask[:, None, :, :].float()
        pos_loss = pos_loss * mask
        neg_loss = neg_loss * mask
        num_pos = (pos * mask).sum()
    else:
        num_pos = pos.sum()
    pos_loss = pos_loss.sum()
    neg_loss = neg_loss.sum()
    if num_pos == 0:
        return -neg_loss
    return -(pos_loss + neg_loss) / num_pos


def reg_loss_centernet(pred_map, mask, ind, target):
    """L1 regression loss at object centres, one value per box code.

    Args:
        pred_map: (B, D, H, W) regression maps (D = code size, e.g. 10).
        mask: (B, K) 1 for valid object slots, 0 for padding.
        ind: (B, K) int64 cell index ``y * W + x`` of each slot.
        target: (B, K, D) encoded target boxes. NaN entries are ignored (they add nothing), unlike
            OpenPCDet, where ``NaN * 0`` leaks a NaN into the loss.
    Returns:
        (D,) sum over valid slots of |pred - target| per code, divided by max(#valid slots, 1).
    """
    pred = transpose_and_gather_feat(pred_map, ind)
    num = mask.float().sum()
    weight = mask.unsqueeze(2).expand_as(target).float()
    not_nan = ~torch.isnan(target)
    weight = weight * not_nan.float()
    target = torch.where(not_nan, target, torch.zeros_like(target))
    loss = torch.abs(pred * weight - target * weight)
    loss = loss.transpose(2, 0).sum(dim=2).sum(dim=1)
    return loss / torch.clamp_min(num, min=1.0)


class FocalLossCenterNet(nn.Module):
    """Module form of :func:`focal_loss_centernet` (``forward(pred, target, mask=None)``)."""

    def forward(self, pred, target, mask=None):
        return focal_loss_centernet(pred, target, mask=mask)


class RegLossCenterNet(nn.Module):
    """Module form of :func:`reg_loss_centernet` (``forward(pred_map, mask, ind, target)``)."""

    def forward(self, pred_map, mask, ind, target):
        return reg_loss_centernet(pred_map, mask, ind, target)
