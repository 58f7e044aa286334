"""``tools/disparity.py``: load a teacher and students, gather their neck features at the teacher's proposals,
bring each student to the teacher's width, write the per-region distances (JSON) and the histogram (PNG).
The measurement itself is :mod:`bench.kdbench.disparity`."""
import argparse
import copy
import json
import time
from pathlib import Path

import torch

from . import disparity as D

FEATURE_KEY = 'spatial_features_2d'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Per-region teacher-student neck-feature distance at the teacher\'s '
                                            'proposals (the RDD paper\'s Fig. 2): histogram PNG + JSON')
    p.add_argument('--teacher_cfg', required=True, help='teacher config (a plain detector config)')
    p.add_argument('--teacher_ckpt', required=True, help='teacher checkpoint')
    p.add_argument('--student', nargs=3, action='append', metavar=('LABEL', 'CFG', 'CKPT'), required=True,
                   help='a student: label, its config (plain or Distiller) and checkpoint; repeat for several')
    p.add_argument('--adapter', choices=['lstsq', 'checkpoint'], default='lstsq',
                   help='lstsq: affine map fitted on train-split regions (every student alike, default); '
                        'checkpoint: the Distiller checkpoint\'s KD-loss adapter (students without one: lstsq)')
    p.add_argument('--fit_samples', type=int, default=40, help='train-split samples for the lstsq fit')
    p.add_argument('--max_samples', type=int, default=None, help='val samples to measure (default: all)')
    p.add_argument('--score_thresh', type=float, default=D.DEFAULT_SCORE_THRESH, help='teacher proposal score')
    p.add_argument('--grid', type=int, default=D.DEFAULT_GRID, help='sample points per box side')
    p.add_argument('--batch_size', type=int, default=2)
    p.add_argument('--threads', type=int, default=1,
                   help='torch compute threads (1: the CPU sparse convs are fastest per core, and a shared '
                        'machine does not stall them)')
    p.add_argument('--out', required=True, help='output prefix: writes <out>.json and <out>.png')
    p.add_argument('--set', dest='set_cfgs', default=None, nargs=argparse.REMAINDER,
                   help='KEY VALUE pairs applied to every config (e.g. DATA_CONFIG.DATA_PATH <root>); must come last')
    return p.parse_args(argv)


def load_detector(cfg_path, ckpt, set_cfgs, teacher_ckpt):
    """``(cfg, detector, adapter or None)`` in eval mode; for a Distiller checkpoint the detector is its student
    and the adapter its KD loss's ``psi`` (RDD) or ``adapter`` module (when exactly one loss has one)."""
    import rdd.distill  # noqa: F401  (registers the Distiller)
    from rdd.engine.cli import load_config
    from rdd.models import build_model
    from rdd.models.checkpoint import load_state_dict_strict, read_model_state
    is_kd = load_config(str(cfg_path), set_cfgs).MODEL.get('NAME') == 'Distiller'
    cfg = load_config(str(cfg_path), set_cfgs, teacher_ckpt=str(teacher_ckpt) if is_kd else None)
    model = build_model(cfg)
    load_state_dict_strict(model, read_model_state(str(ckpt)), strict=True)
    model.eval()
    if not is_kd:
        return cfg, model, None
    adapters = [getattr(m, name) for m in model.kd_losses.values() for name in ('psi', 'adapter')
                if isinstance(getattr(m, name, None), torch.nn.Module)]
    return cfg, model.student, adapters[0] if len(adapters) == 1 else None


def same_voxels(cfg_a, cfg_b):
    from rdd.models import model_geometry
    a, b = model_geometry(cfg_a), model_geometry(cfg_b)
    return list(a.voxel_size) == list(b.voxel_size) and list(a.point_cloud_range) == list(b.point_cloud_range)


def split_loader(cfg, split, batch_size):
    """A test-mode dataloader over ``split`` ('test' = the config's val split, 'train' = its train split)."""
    from rdd.datasets import build_dataloader
    data_cfg = copy.deepcopy(cfg.DATA_CONFIG)
    if split == 'train':
        data_cfg.DATA_SPLIT['test'] = data_cfg.DATA_SPLIT['train']
        data_cfg.INFO_PATH['test'] = data_cfg.INFO_PATH['train']
    _, loader, _ = build_dataloader(data_cfg, cfg.CLASS_NAMES, batch_size, False, workers=0, training=False)
    return loader


def map_placement(cfg, fmap):
    """``(origin (x0, y0), cell size (sx, sy))`` in metres of a model's BEV map ``fmap`` (B, C, H, W)."""
    pc = [float(v) for v in cfg.DATA_CONFIG.POINT_CLOUD_RANGE]
    h, w = fmap.shape[-2:]
    return (pc[0], pc[1]), ((pc[3] - pc[0]) / w, (pc[4] - pc[1]) / h)


def neck_features(model, batch_dict):
    """The model's ``spatial_features_2d`` (B, C, H, W): its modules up to (not including) the dense head, so
    no boxes are decoded (a student's decoding and NMS are not needed here)."""
    for module in model.module_list:
        if module is getattr(model, 'dense_head', None):
            break
        batch_dict = module(batch_dict)
    return batch_dict[FEATURE_KEY]


@torch.no_grad()
def gather(loader, teacher, students, max_samples, score_thresh, grid):
    """Point features at the teacher's proposals: ``(teacher (P, C_t), [student (P, C_s)], regions R)`` with
    P = R * grid²; ``teacher`` / ``students`` are ``(cfg, model)``."""
    from rdd.engine.batch import load_data_to_device
    t_feats, s_feats, regions, seen = [], [[] for _ in students], 0, 0
    for batch in loader:
        if max_samples is not None and seen >= max_samples:
            break
        load_data_to_device(batch, 'cpu')
        t_batch = dict(batch)
        pred_dicts, _ = teacher[1](t_batch)
        boxes = D.teacher_proposals(pred_dicts, score_thresh)
        s_maps = []
        for cfg, model in students:
            s_maps.append((cfg, neck_features(model, dict(batch))))
        for b, bx in enumerate(boxes):
            if max_samples is not None and seen >= max_samples:
                break
            seen += 1
            if bx.shape[0] == 0:
                continue
            pts = D.region_points(bx, grid).reshape(-1, 2)
            t_map = t_batch[FEATURE_KEY]
            t_feats.append(D.sample_map(t_map[b], pts, *map_placement(teacher[0], t_map)))
            for i, (cfg, s_map) in enumerate(s_maps):
                s_feats[i].append(D.sample_map(s_map[b], pts, *map_placement(cfg, s_map)))
            regions += bx.shape[0]
    if not regions:
        raise ValueError('the teacher made no proposal scored >= %.2f on these samples: nothing to measure '
                         '(lower --score_thresh or train the teacher longer)' % score_thresh)
    return torch.cat(t_feats), [torch.cat(s) for s in s_feats], regions, seen


def measure(args):
    """Everything ``tools/disparity.py`` computes; returns the JSON dict (also written with the PNG). Runs with
    ``args.threads`` torch threads and restores the caller's count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _measure(args)
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _measure(args):
    from rdd.engine.rng import set_random_seed
    tic = time.time()
    set_random_seed(0)  # the loader draws MAX_SWEEPS - 1 sweeps per frame at random: the same ones every time
    t_cfg, teacher, _ = load_detector(args.teacher_cfg, args.teacher_ckpt, args.set_cfgs, None)
    loaded = [(label,) + load_detector(cfg, ckpt, args.set_cfgs, args.teacher_ckpt)
              for label, cfg, ckpt in args.student]
    for label, cfg, _, _ in loaded:
        if not same_voxels(cfg, t_cfg):
            raise ValueError(f'student {label!r}: its voxel grid differs from the teacher\'s; this tool feeds both '
                             f'the same voxels (use students trained on the teacher\'s DATA_CONFIG)')
    students = [(cfg, model) for _, cfg, model, _ in loaded]
    t_val, s_val, regions, seen = gather(split_loader(t_cfg, 'test', args.batch_size), (t_cfg, teacher), students,
                                         args.max_samples, args.score_thresh, args.grid)
    t_fit, s_fit, fit_regions, _ = gather(split_loader(t_cfg, 'train', args.batch_size), (t_cfg, teacher),
                                          students, args.fit_samples, args.score_thresh, args.grid)
    energy = max(float((t_val ** 2).mean()), 1e-12)  # all-zero teacher features (dead ReLUs): raw distances
    points = args.grid * args.grid
    out = {'teacher': {'cfg': str(args.teacher_cfg), 'ckpt': str(args.teacher_ckpt)}, 'val_samples': seen,
           'regions': regions, 'fit_regions': fit_regions, 'grid': args.grid, 'score_thresh': args.score_thresh,
           'teacher_energy': energy, 'students': []}
    curves = []
    for (label, cfg_path, ckpt), (_, _, _, ckpt_adapter), sv, sf in zip(args.student, loaded, s_val, s_fit):
        if args.adapter == 'checkpoint' and ckpt_adapter is not None:
            kind = 'checkpoint'
            adapt = (ckpt_adapter.cells if hasattr(ckpt_adapter, 'cells')  # RDD's psi: (P, C_s) -> (P, C_t)
                     else lambda f, a=ckpt_adapter: a(f.t()[None, :, :, None]).squeeze(-1)[0].t())  # 1x1 conv
            fit_r2 = None
        else:
            kind = 'lstsq'
            weight = D.fit_affine(sf, t_fit)
            adapt = lambda f, w=weight: D.apply_affine(w, f)
            fit_r2 = D.r_squared(adapt(sf), t_fit)
        adapted = adapt(sv)
        dist = D.region_distances(adapted, t_val, points)
        curves.append((label, dist / energy))
        out['students'].append({'label': label, 'cfg': str(cfg_path), 'ckpt': str(ckpt), 'adapter': kind,
                                'r2_fit': fit_r2, 'r2_val': D.r_squared(adapted, t_val),
                                'distance': D.summary(dist), 'normalized': D.summary(dist / energy),
                                'normalized_per_region': [round(float(v), 6) for v in dist / energy]})
    out['seconds'] = round(time.time() - tic, 1)
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    out['files'] = [str(prefix.with_suffix('.json')), str(prefix.with_suffix('.png'))]
    D.plot_histogram(curves, prefix.with_suffix('.png'),
                     f'{regions} teacher regions on {seen} val samples, adapter: {args.adapter}')
    prefix.with_suffix('.json').write_text(json.dumps(out, indent=1))
    return out


def main(argv=None):
    """The command line: measure, write, print one line per student; returns 0."""
    out = measure(parse_args(argv))
    for s in out['students']:
        n = s['normalized']
        print(f"{s['label']:<28} regions {n['count']:>5}  median {n['median']:.4g}  mean {n['mean']:.4g}  "
              f"q90 {n['q90']:.4g}  R²(val) {s['r2_val']:.3f}  adapter {s['adapter']}")
    print('wrote ' + ' and '.join(out['files']))
    return 0
