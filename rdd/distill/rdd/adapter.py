"""ψ, the student adapter of Eq. 8: 1x1 conv (student width -> teacher width) + BatchNorm + ReLU.

Training-only: it lives in the loss (saved under the Distiller's ``kd_losses.`` prefix, never in the exported
student). The loss applies it to the student map's cells that the regions read (:meth:`StudentAdapter.cells`), which
gives exactly ``RoIAlign(ψ(F_s))`` at the regions' points, with BatchNorm's batch statistics taken over those cells
(docs/method.md, step 3: the whole-map form costs a full-map conv and its backward per step).
"""
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['StudentAdapter']


class StudentAdapter(nn.Module):
    """ψ = ReLU(BN(W x)), ``W`` a 1x1 conv without bias (BN's shift replaces it).

    Args:
        student_channels: C_s; teacher_channels: C_t.
    Parameters: ``conv.weight`` (C_t, C_s, 1, 1), ``bn.weight`` / ``bn.bias`` (C_t,) (+ BN running buffers).
    """

    def __init__(self, student_channels, teacher_channels):
        super().__init__()
        self.conv = nn.Conv2d(int(student_channels), int(teacher_channels), kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(int(teacher_channels))

    def forward(self, feature_map):
        """The map form: ``(B, C_s, H, W)`` -> ``(B, C_t, H, W)``."""
        return F.relu(self.bn(self.conv(feature_map)))

    def cells(self, rows):
        """The cell form: ``(U, C_s)`` cell vectors -> ``(U, C_t)``; BatchNorm statistics over the U cells in
        training (its running statistics otherwise)."""
        weight = self.conv.weight
        projected = F.linear(rows, weight.view(weight.shape[0], weight.shape[1]))
        return F.relu(self.bn(projected[:, :, None, None])).view(rows.shape[0], -1)
