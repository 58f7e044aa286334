"""ψ, the student adapter of Eq. 8: 1x1 conv (student width -> teacher width) + BatchNorm + ReLU.

Training-only: it lives in the loss (saved under the Distiller's ``kd_losses.`` prefix, never in the exported
student). The loss applies it to the student map's cells that the regions read (:meth:`StudentAdapter.cells`), which
gives exactly ``RoIAlign(ψ(F_s))`` at the regions' points, with BatchNorm's batch statistics taken over those cells
(docs/method.md, step 3: the whole-map form costs a full-map conv and its backward per step).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['StudentAdapter', 'RankLocalBatchNorm']


class RankLocalBatchNorm(nn.Module):
    """BatchNorm over the rows (or the ``N, H, W`` positions) of this process's input, with BatchNorm's parameters,
    buffers, state_dict names and update rule.

    Deliberately not a ``torch.nn.modules.batchnorm._BatchNorm``: ``--sync_bn`` (``convert_sync_batchnorm``) leaves
    it alone. A SyncBatchNorm here would wait for every rank at every call, but a rank with no region pair in its
    batch does not call ψ at all, and the others would hang.
    """

    def __init__(self, channels, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer('running_mean', torch.zeros(channels))
        self.register_buffer('running_var', torch.ones(channels))
        self.register_buffer('num_batches_tracked', torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        """``(N, C)`` or ``(N, C, H, W)``: batch statistics in training (running ones updated), running ones else."""
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)


class StudentAdapter(nn.Module):
    """ψ = ReLU(BN(W x)), ``W`` a 1x1 conv without bias (BN's shift replaces it).

    Args:
        student_channels: C_s; teacher_channels: C_t.
    Parameters: ``conv.weight`` (C_t, C_s, 1, 1), ``bn.weight`` / ``bn.bias`` (C_t,) (+ BN running buffers).
    """

    def __init__(self, student_channels, teacher_channels):
        super().__init__()
        self.conv = nn.Conv2d(int(student_channels), int(teacher_channels), kernel_size=1, bias=False)
        self.bn = RankLocalBatchNorm(int(teacher_channels))

    def forward(self, feature_map):
        """The map form: ``(B, C_s, H, W)`` -> ``(B, C_t, H, W)``."""
        return F.relu(self.bn(self.conv(feature_map)))

    def cells(self, rows):
        """The cell form: ``(U, C_s)`` cell vectors -> ``(U, C_t)``; BatchNorm statistics over the U cells in
        training (its running statistics otherwise)."""
        weight = self.conv.weight
        return F.relu(self.bn(F.linear(rows, weight.view(weight.shape[0], weight.shape[1]))))
