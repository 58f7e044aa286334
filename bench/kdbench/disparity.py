"""Per-region teacher–student feature disparity (the RDD paper's Fig. 2), the logic of ``tools/disparity.py``.

For every teacher proposal on the val split, both neck maps (``spatial_features_2d``, (B, C, H, W), H along y,
W along x) are sampled bilinearly at the same ``GRID`` x ``GRID`` metric points of the proposal's rotated BEV
box; the region's disparity is the mean over points and teacher channels of ``(A(f_S) - f_T)²``, where ``A``
brings the student to the teacher's width:

* ``lstsq`` (default, the same for every student, so histograms compare): an affine map ``f_S -> f_T`` (a 1x1
  conv) fitted by ridge least squares on the point features of the teacher's proposals on ``fit_samples``
  samples of the TRAIN split — regions disjoint from the val regions measured;
* ``checkpoint``: the ``adapter`` module of the Distiller checkpoint's KD loss (e.g. RDD's ψ), in eval mode.

Distances are also reported divided by the mean square of the sampled teacher features (one constant per
teacher and split), which makes them unitless and leaves the histograms' shapes unchanged.
"""
import math

import torch
import torch.nn.functional as F

DEFAULT_GRID = 7
DEFAULT_SCORE_THRESH = 0.3
DEFAULT_MAX_PROPOSALS = 100


def teacher_proposals(final_box_dicts, score_thresh=DEFAULT_SCORE_THRESH, max_per_sample=DEFAULT_MAX_PROPOSALS):
    """The regions to compare, per sample: ``(N_b, 7)`` boxes ``x, y, z, dx, dy, dz, yaw`` (metres, radians).

    Today: the teacher's decoded, post-processed boxes scored ``>= score_thresh``, the ``max_per_sample`` best;
    boxes with a non-finite value (a diverged teacher) are dropped. (This is the one place to change to use the
    teacher's heatmap-peak proposals of the RDD loss instead.)
    """
    out = []
    for pred in final_box_dicts:
        boxes, scores = pred['pred_boxes'][:, :7], pred['pred_scores']
        usable = (scores >= score_thresh) & torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        keep = torch.nonzero(usable).flatten()
        keep = keep[torch.argsort(scores[keep], descending=True)[:max_per_sample]]
        out.append(boxes[keep].detach())
    return out


def region_points(boxes, grid=DEFAULT_GRID):
    """``(N, grid*grid, 2)`` metric x, y of the cell centres of a ``grid`` x ``grid`` lattice over each box's
    rotated BEV footprint; ``boxes`` (N, 7+)."""
    steps = (torch.arange(grid, dtype=boxes.dtype, device=boxes.device) + 0.5) / grid - 0.5
    u, v = torch.meshgrid(steps, steps, indexing='xy')
    local = torch.stack([u.flatten(), v.flatten()], dim=1)                       # (G², 2), box units
    local = local[None] * boxes[:, None, 3:5]                                  # (N, G², 2) metres
    cos, sin = torch.cos(boxes[:, 6])[:, None], torch.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin + boxes[:, None, 0]
    y = local[..., 0] * sin + local[..., 1] * cos + boxes[:, None, 1]
    return torch.stack([x, y], dim=-1)


def sample_map(feature_map, points, origin, cell_size):
    """Bilinear samples ``(P, C)`` of one map ``(C, H, W)`` at metric ``points`` (P, 2); cell (row i, col j)
    covers ``origin + [j, j+1) * cell_size[0]`` in x and ``origin + [i, i+1) * cell_size[1]`` in y. Points off
    the map read zeros."""
    c, h, w = feature_map.shape
    gx = 2.0 * (points[:, 0] - origin[0]) / (w * cell_size[0]) - 1.0
    gy = 2.0 * (points[:, 1] - origin[1]) / (h * cell_size[1]) - 1.0
    grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2).to(feature_map.dtype)
    out = F.grid_sample(feature_map[None], grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    return out.view(c, -1).t()


def fit_affine(student_feats, teacher_feats, ridge=1e-3):
    """Ridge least squares ``W`` (C_s + 1, C_t) with ``[f_S, 1] @ W ≈ f_T``; the ridge is ``ridge`` times the
    mean diagonal of ``XᵀX`` (so it does not depend on the features' scale), the bias is not penalised."""
    x = torch.cat([student_feats, torch.ones_like(student_feats[:, :1])], dim=1).double()
    gram = x.t() @ x
    penalty = ridge * torch.diagonal(gram)[:-1].mean().clamp_min(1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    eye[-1, -1] = 0.0
    return torch.linalg.solve(gram + penalty * eye, x.t() @ teacher_feats.double()).float()


def apply_affine(weight, student_feats):
    return student_feats @ weight[:-1] + weight[-1]


def r_squared(pred, target):
    """Fraction of the teacher features' variance (about their channel means) explained by ``pred``."""
    resid = ((pred - target) ** 2).sum()
    total = ((target - target.mean(dim=0, keepdim=True)) ** 2).sum().clamp_min(1e-12)
    return float(1.0 - resid / total)


def region_distances(adapted, teacher_feats, num_points):
    """Per-region mean square distance: ``adapted`` / ``teacher_feats`` (R * num_points, C_t) -> (R,)."""
    diff = (adapted - teacher_feats) ** 2
    return diff.view(-1, num_points, diff.shape[1]).mean(dim=(1, 2))


def summary(values):
    """mean, median, 10 % / 90 % quantiles and count of a 1-D tensor (None entries when empty)."""
    if values.numel() == 0:
        return {'count': 0, 'mean': None, 'median': None, 'q10': None, 'q90': None}
    q = torch.quantile(values.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {'count': int(values.numel()), 'mean': float(values.mean()), 'median': float(q[1]),
            'q10': float(q[0]), 'q90': float(q[2])}


def log_bins(arrays, count=40):
    """``count + 1`` log-spaced bin edges covering the positive values of every array."""
    positive = torch.cat([a[a > 0] for a in arrays if a.numel()]) if any(a.numel() for a in arrays) else None
    if positive is None or positive.numel() == 0:
        return [1e-6, 1.0]
    lo, hi = math.log10(float(positive.min())), math.log10(float(positive.max()))
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    return [10 ** (lo + (hi - lo) * i / count) for i in range(count + 1)]


def plot_histogram(curves, path, title):
    """Overlaid step histograms of normalised distances; ``curves`` is ``[(label, 1-D tensor)]``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    bins = log_bins([c for _, c in curves])
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in curves:
        if values.numel():
            ax.hist(values.numpy(), bins=bins, histtype='step', linewidth=1.5,
                    label=f'{label} (median {float(values.median()):.3g})')
    ax.set_xscale('log')
    ax.set_xlabel('region mean-square distance to the teacher / teacher feature energy')
    ax.set_ylabel('regions')
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
