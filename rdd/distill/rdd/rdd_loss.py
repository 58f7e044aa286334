"""RDDLoss: Representation Disparity-aware Distillation on bilateral proposal region pairs (docs/method.md)."""
import torch
import torch.nn as nn

from rdd.ops.bev_pool import resample_to_grid, roi_grid_pool

from ..registry import KD_LOSSES
from ..kd_utils import adapt_regions, zero_loss
from .balanced_mask import balanced_pair_weights, weighted_sample_mean
from .defaults import RDD_DEFAULTS, rdd_config_with_defaults
from .disparity import DISPARITIES, select_top_fraction
from .mi_bounds import LearnableVariance, bernoulli_bound, gaussian_bound
from .proposals import SOURCES, ProposalGenerator

__all__ = ['RDDLoss', 'RDD_DEFAULTS', 'rdd_config_with_defaults']


def _head_channels(head_dict):
    """``{'center': 2 or {'out_channels': 2, ...}, ...}`` -> ordered list of (name, channels) without 'hm'."""
    return [(k, int(v['out_channels'] if isinstance(v, dict) else v)) for k, v in head_dict.items() if k != 'hm']


class _KnownLinear(torch.autograd.Function):
    """``y = x W^T + b`` for rows whose ``y`` was already computed without grad: forward returns ``y`` as is,
    backward is the linear map's (so a layer applied to all rows for a no-grad use is differentiated only on the
    rows that reach the loss)."""

    @staticmethod
    def forward(ctx, x, weight, bias, y):
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gx = (g @ weight).view(x.shape) if ctx.needs_input_grad[0] else None
        gw = g.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gb = g.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


@KD_LOSSES.register()
class RDDLoss(nn.Module):
    """RDD loss: proposals -> rotated-RoI region pairs -> disparity top-gamma -> balanced MI bounds.

    Args:
        teacher_channels / student_channels: widths of the two feature maps (``FEATURE_KEY``).
        teacher_geometry / student_geometry: :class:`rdd.geometry.BEVGrid` of each model's BEV maps.
        class_names: global class list (``CLASS_NAMES``; labels are 1-based indices into it).
        class_names_each_head: list (one per head group) of class-name lists, identical for both models.
        head_dict: ordered regression maps of a head group, name -> channels (``hm`` excluded).
        proposal_generator: :class:`ProposalGenerator`.
        Remaining args: the config keys of the same name in lower case (docs/method.md).
    Parameters: ``adapter`` (1x1 conv student -> teacher width, training-only), ``feat_var.s`` (Ct,),
    ``reg_var.s`` (num_heads, regression channels).
    """

    def __init__(self, teacher_channels, student_channels, teacher_geometry, student_geometry, class_names,
                 class_names_each_head, head_dict, proposal_generator, grid_size=7, gamma=0.6, disparity='kl',
                 disparity_eps=1e-4, temperature=1.0, lambda_feat=1.0, lambda_logit=1.0, lambda_reg=0.2,
                 logit_heads='own', balance_size=True, balance_source=True, balance_class=True, compression_beta=0.0,
                 grid_mismatch='resample', feature_key='spatial_features_2d', var_init=1.0, var_eps=1e-4,
                 learn_var=True):
        super().__init__()
        self.t_geom, self.s_geom = teacher_geometry, student_geometry
        self.proposals = proposal_generator
        # what the Distiller must provide (rdd.distill.registry): student boxes only when they propose regions
        self.REQUIRES = ('features', 'pred_dicts', 'boxes') + (
            ('student_boxes',) if 'student' in proposal_generator.sources else ())
        self.grid_size, self.gamma, self.disparity_eps = int(grid_size), float(gamma), float(disparity_eps)
        self.disparity_fn = DISPARITIES[disparity]
        self.temperature = float(temperature)
        self.lambda_feat, self.lambda_logit = float(lambda_feat), float(lambda_logit)
        self.lambda_reg = float(lambda_reg)
        self.logit_heads, self.grid_mismatch, self.feature_key = logit_heads, grid_mismatch, feature_key
        self.balance = dict(balance_size=bool(balance_size), balance_source=bool(balance_source),
                            balance_class=bool(balance_class))
        self.compression_beta = float(compression_beta)
        self.head_names = [list(h) for h in class_names_each_head]
        self.reg_layout = list(head_dict.items())
        label_to_head = torch.full((len(class_names) + 1,), -1, dtype=torch.long)
        for h, names in enumerate(self.head_names):
            for name in names:
                if name not in class_names:
                    raise ValueError(f'head class {name!r} is not in CLASS_NAMES {list(class_names)}')
                label_to_head[list(class_names).index(name) + 1] = h
        self.register_buffer('label_to_head', label_to_head, persistent=False)
        n_reg = sum(c for _, c in self.reg_layout)
        self.num_heads, self.num_reg = len(self.head_names), n_reg
        # channel layout of the per-model concatenation [head0: reg..., hm..., head1: ...]
        reg_idx, hm_idx, hm_head, off = [], [], [], 0
        for h, names in enumerate(self.head_names):
            reg_idx.append(list(range(off, off + n_reg)))
            hm_idx += list(range(off + n_reg, off + n_reg + len(names)))
            hm_head += [h] * len(names)
            off += n_reg + len(names)
        self.register_buffer('reg_idx', torch.tensor(reg_idx, dtype=torch.long), persistent=False)
        self.register_buffer('hm_idx', torch.tensor(hm_idx, dtype=torch.long), persistent=False)
        self.register_buffer('hm_head', torch.tensor(hm_head, dtype=torch.long), persistent=False)
        self.adapter = nn.Conv2d(int(student_channels), int(teacher_channels), kernel_size=1, bias=True)
        self.feat_var = LearnableVariance(int(teacher_channels), init=var_init, eps=var_eps)
        self.reg_var = LearnableVariance((self.num_heads, n_reg), init=var_init, eps=var_eps)
        if not learn_var:  # ablation: fixed variances (the bound becomes a scaled MSE)
            self.feat_var.s.requires_grad_(False)
            self.reg_var.s.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg, context):
        """Build from the loss config and the :class:`rdd.distill.context.KDContext` (both heads must have the
        same class layout and regression maps); the Distiller's ``GRID_MISMATCH`` is the default policy."""
        cfg = dict(cfg)
        cfg.setdefault('GRID_MISMATCH', context.grid_mismatch)
        c = rdd_config_with_defaults(cfg)
        context.check_same_heads('RDDLoss')
        t_ch, s_ch = context.feature_channels(c['FEATURE_KEY'], 'RDDLoss')
        head = context.teacher.head
        module = cls(t_ch, s_ch, context.teacher.grid, context.student.grid, head.class_names,
                     head.class_names_each_head, {k: head.head_channels[k] for k in head.head_order},
                     ProposalGenerator.from_config(c['PROPOSAL']), grid_size=c['GRID_SIZE'],
                     gamma=c['GAMMA'], disparity=c['DISPARITY'], disparity_eps=c['DISPARITY_EPS'],
                     temperature=c['TEMPERATURE'], lambda_feat=c['LAMBDA_FEAT'], lambda_logit=c['LAMBDA_LOGIT'],
                     lambda_reg=c['LAMBDA_REG'],
                     logit_heads=c['LOGIT_HEADS'], balance_size=c['BALANCE']['SIZE'],
                     balance_source=c['BALANCE']['SOURCE'], balance_class=c['BALANCE']['CLASS'],
                     compression_beta=c['COMPRESSION_BETA'], grid_mismatch=c['GRID_MISMATCH'],
                     feature_key=c['FEATURE_KEY'], var_init=c['VAR_INIT'], var_eps=c['VAR_EPS'],
                     learn_var=c['LEARN_VAR'])
        if module.grid_mismatch == 'error':
            context.check_grid('RDDLoss')
        module.feature_keys = (c['FEATURE_KEY'],)
        module.min_box_score = float(c['PROPOSAL']['SCORE_THRESH'])
        return module

    def adapt(self, regions):
        """Apply the 1x1 adapter to pooled student regions (P, K, Cs) -> (P, K, Ct) (a 1x1 conv is per-cell linear,
        so adapting the pooled cells equals pooling the adapted map wherever the cells lie inside the map)."""
        return adapt_regions(self.adapter, regions)

    def _head_maps(self, pred_dicts, who):
        if len(pred_dicts) != self.num_heads:
            raise ValueError(f'{who} pred_dicts has {len(pred_dicts)} head groups, RDD expects {self.num_heads}')
        maps = []
        for h, d in enumerate(pred_dicts):
            for name, ch in self.reg_layout + [('hm', len(self.head_names[h]))]:
                if name not in d or d[name].shape[1] != ch:
                    got = tuple(d[name].shape) if name in d else 'missing'
                    raise ValueError(f'{who} head group {h} map {name!r}: expected {ch} channels, got {got}')
                maps.append(d[name])
        return torch.cat(maps, dim=1)

    def _logit_terms(self, teacher, student, kept, head_idx, weights, s_geom, shapes, batch_size):
        """Heatmap Bernoulli and regression Gaussian terms on the kept pairs -> (L_hm, L_reg)."""
        zt = self._head_maps(teacher['pred_dicts'], 'teacher').detach()
        zs = self._head_maps(student['pred_dicts'], 'student')
        for who, z, shape in (('teacher', zt, shapes[0]), ('student', zs, shapes[1])):
            if tuple(z.shape[-2:]) != tuple(shape):
                raise ValueError(f'{who} head maps {tuple(z.shape[-2:])} and {self.feature_key} {tuple(shape)} '
                                 f'differ in size; RDD pools both with the same BEV geometry')
        if s_geom is not self.s_geom:  # GRID_MISMATCH resample: student maps go to the teacher grid
            zs = resample_to_grid(zs, self.s_geom, self.t_geom)
        pt = roi_grid_pool(zt, kept.boxes, kept.batch_idx, self.t_geom, self.grid_size)
        ps = roi_grid_pool(zs, kept.boxes, kept.batch_idx, s_geom, self.grid_size)
        hm = bernoulli_bound(ps[..., self.hm_idx], pt[..., self.hm_idx], self.temperature).mean(1)  # (P, n_cls)
        var = self.reg_var()  # (n_heads, R)
        if self.logit_heads == 'own':
            own = self.hm_head[None, :] == head_idx[:, None]
            hm = (hm * own).sum(1) / own.sum(1)
            idx = self.reg_idx[head_idx][:, None, :].expand(-1, pt.shape[1], -1)  # (P, K, R)
            reg = gaussian_bound(pt.gather(2, idx), ps.gather(2, idx), var[head_idx][:, None, :])
        else:
            hm = hm.mean(1)
            idx = self.reg_idx.flatten()
            reg = gaussian_bound(pt[..., idx], ps[..., idx], var.flatten())
        b = kept.batch_idx
        return weighted_sample_mean(hm, weights, b, batch_size), weighted_sample_mean(reg, weights, b, batch_size)

    def forward(self, teacher, student, batch_dict):
        """
        Args:
            teacher / student: dicts with ``FEATURE_KEY`` (B, C, H, W), ``pred_dicts`` (per head group raw maps,
                ``hm`` logits) and ``boxes`` (per sample dict of pred_boxes, pred_scores, pred_labels 1-based).
            batch_dict: needs ``gt_boxes`` (B, M, 10) when PROPOSAL.USE_GT.
        Returns:
            (loss scalar, tb_dict of floats). The loss is connected to every parameter of this module (0 when
            there is no proposal). Counts in tb_dict are per sample.
        """
        key = self.feature_key
        for who, d in (('teacher', teacher), ('student', student)):
            if key not in d:
                raise KeyError(f'{who} outputs have no {key!r} (FEATURE_KEY); keys: {sorted(d)}')
        ft, fs = teacher[key].detach(), student[key]
        bsz = ft.shape[0]
        if fs.shape[0] != bsz:
            raise ValueError(f'teacher batch {bsz} != student batch {fs.shape[0]}')
        self.t_geom.check_shape(*ft.shape[-2:], what=f'teacher {key}')
        self.s_geom.check_shape(*fs.shape[-2:], what=f'student {key}')
        s_geom, shapes = self.s_geom, (ft.shape[-2:], fs.shape[-2:])
        if not self.t_geom.same_as(self.s_geom):
            if self.grid_mismatch == 'error':
                raise ValueError(f'student {key} grid {tuple(fs.shape[-2:])} differs from the teacher grid '
                                 f'{tuple(ft.shape[-2:])} (or their range / cell size); set GRID_MISMATCH to '
                                 f'resample or native')
            if self.grid_mismatch == 'resample':
                fs, s_geom = resample_to_grid(fs, self.s_geom, self.t_geom), self.t_geom
        props = self.proposals(teacher['boxes'], student['boxes'], batch_dict.get('gt_boxes'))
        labels = props.labels.clamp(0, self.label_to_head.shape[0] - 1)
        head_idx = self.label_to_head[labels]
        bad = (head_idx < 0) | (props.labels != labels)
        if bool(bad.any()):
            raise ValueError(f'proposal labels {props.labels[bad].unique().tolist()} map to no head group '
                             f'(labels are 1-based indices into CLASS_NAMES)')
        loss = zero_loss(self, fs)  # keeps every parameter in the graph (DDP)
        n = len(props)
        var_f = self.feat_var()
        tb = {'rdd_pairs_proposed': n / bsz, 'rdd_sigma2_feat_mean': float(var_f.detach().mean()),
              'rdd_sigma2_feat_min': float(var_f.detach().min()),
              'rdd_sigma2_reg_mean': float(self.reg_var().detach().mean())}
        for i, name in enumerate(SOURCES):
            tb[f'rdd_pairs_{name}'] = float(props.num_per_source[i]) / bsz
        tb['rdd_pairs_merged'] = float((props.sources.sum(1) > 1).sum()) / bsz
        terms = dict(rdd_feat=0.0, rdd_hm=0.0, rdd_reg=0.0, rdd_pairs_kept=0.0, rdd_disp_kept=0.0,
                     rdd_disp_dropped=0.0)
        if self.compression_beta > 0:
            terms['rdd_compress'] = 0.0
        tb.update(terms)
        if n == 0:
            tb['rdd_loss'] = 0.0
            return loss, tb
        g = self.grid_size
        rt = roi_grid_pool(ft, props.boxes, props.batch_idx, self.t_geom, g)
        rs_raw = roi_grid_pool(fs, props.boxes, props.batch_idx, s_geom, g)
        with torch.no_grad():  # all pairs for the disparity; the loss only differentiates the kept ones
            rs_all = self.adapt(rs_raw)
        disp = self.disparity_fn(rt, rs_all, self.disparity_eps)
        keep = select_top_fraction(disp, props.batch_idx, bsz, self.gamma)
        keep_idx = torch.nonzero(keep).flatten()
        kept, k_head = props.index(keep_idx), head_idx[keep_idx]
        rs_raw, rt = rs_raw.index_select(0, keep_idx), rt.index_select(0, keep_idx)
        w2d = self.adapter.weight.view(self.adapter.weight.shape[:2])
        rs = _KnownLinear.apply(rs_raw, w2d, self.adapter.bias, rs_all.index_select(0, keep_idx))
        tb['rdd_pairs_kept'] = float(keep.sum()) / bsz
        tb['rdd_disp_kept'] = float(disp[keep].mean())
        tb['rdd_disp_dropped'] = float(disp[~keep].mean()) if bool((~keep).any()) else 0.0
        w = balanced_pair_weights(kept.batch_idx, kept.sources, k_head, bsz, self.num_heads,
                                  box_area=kept.boxes[:, 3] * kept.boxes[:, 4], **self.balance)
        if self.lambda_feat > 0:
            l_feat = weighted_sample_mean(gaussian_bound(rt, rs, var_f), w, kept.batch_idx, bsz)
            loss = loss + self.lambda_feat * l_feat
            tb['rdd_feat'] = float(l_feat.detach())
        if self.lambda_logit > 0:
            l_hm, l_reg = self._logit_terms(teacher, student, kept, k_head, w, s_geom, shapes, bsz)
            loss = loss + self.lambda_logit * (l_hm + self.lambda_reg * l_reg)
            tb['rdd_hm'], tb['rdd_reg'] = float(l_hm.detach()), float(l_reg.detach())
        if self.compression_beta > 0:
            l_c = weighted_sample_mean(0.5 * rs_raw.pow(2).flatten(1).mean(1), w, kept.batch_idx, bsz)
            loss = loss + self.compression_beta * l_c
            tb['rdd_compress'] = float(l_c.detach())
        tb['rdd_loss'] = float(loss.detach())
        return loss, tb
