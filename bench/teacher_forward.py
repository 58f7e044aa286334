"""Frozen-teacher forward on CPU: plain ``no_grad`` vs BatchNorm folded + ``torch.inference_mode``, side by side.

    python bench/teacher_forward.py [--cfg configs/cp_voxel_01.yaml] [--sweeps 1] [--repeats 5] [--json out.json]

The teacher (default: the paper's 0.1 m CP-Voxel, full size) gets random weights and random BatchNorm statistics;
the input is one synthetic nuScenes-like cloud (``rdd.datasets.synthetic.make_point_cloud``, ``--sweeps`` sweeps)
voxelized on the teacher's grid. A "teacher forward" is what a KD step needs from the teacher: every module up to
the dense head, then the head's shared conv and head maps (no box decoding). Variants, warmed up, then run
round-robin ``--repeats`` times (medians of wall and of process CPU seconds; CPU seconds are the steadier measure
on a shared machine): ``plain`` (``torch.no_grad``, the model as trained), ``inference`` (``torch.inference_mode``
only), ``folded`` (BN folded, ``no_grad``) and ``frozen`` (:func:`rdd.models.fold_bn.freeze_for_inference`: BN
folded + channels-last dense weights, run by :func:`rdd.models.fold_bn.run_frozen`, including the copy of the
outputs into ordinary tensors). Also reports the largest relative difference of the frozen outputs.
"""
import argparse
import datetime
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_json import emit  # noqa: E402
from synthetic_batch import make_batch  # noqa: E402


def teacher_maps(model, batch):
    """BEV map (B, C, H, W) and the raw head maps of every head group (what a KD loss reads)."""
    from rdd.distill.feature_taps import raw_head_maps, run_to_head
    features = run_to_head(model, dict(batch))['spatial_features_2d']
    return {'spatial_features_2d': features, 'pred_dicts': raw_head_maps(model.dense_head, features)}


def random_teacher(cfg, seed=0):
    from rdd.models import build_model
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def max_rel_diff(a, b):
    fa = [a['spatial_features_2d']] + [v for d in a['pred_dicts'] for v in d.values()]
    fb = [b['spatial_features_2d']] + [v for d in b['pred_dicts'] for v in d.values()]
    return max((x - y).abs().max().item() / max(y.abs().max().item(), 1e-12) for x, y in zip(fa, fb))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cfg', default=os.path.join(ROOT, 'configs', 'cp_voxel_01.yaml'))
    ap.add_argument('--sweeps', type=int, default=1)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--json', default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from rdd.config import cfg_from_yaml_file
    from rdd.models.fold_bn import fold_batchnorm, freeze_for_inference, run_frozen
    cfg = cfg_from_yaml_file(args.cfg)
    model = random_teacher(cfg)
    t0 = time.perf_counter()
    frozen = freeze_for_inference(model)
    fold_s = time.perf_counter() - t0
    folded = fold_batchnorm(model)
    batch = make_batch(cfg, args.sweeps)
    batch.pop('gt_boxes')

    def plain(m=model):
        with torch.no_grad():
            return teacher_maps(m, batch)

    def inference(m=model):
        return run_frozen(teacher_maps, m, batch)

    variants = {'plain': plain, 'inference': inference, 'folded': lambda: plain(folded),
                'frozen': lambda: inference(frozen)}
    outs = {name: fn() for name, fn in variants.items()}  # warm-up
    runs = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            runs[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = {name: statistics.median(r) for name, r in runs.items()}
    med_cpu = {name: statistics.median(r) for name, r in cpu.items()}
    res = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
           'config': os.path.relpath(args.cfg, ROOT), 'threads': torch.get_num_threads(), 'sweeps': args.sweeps,
           'voxels': int(batch['voxels'].shape[0]), 'bev': list(outs['plain']['spatial_features_2d'].shape[-2:]),
           'loadavg': os.getloadavg(), 'fold_s': fold_s, 'repeats': args.repeats,
           'median_s': med, 'median_cpu_s': med_cpu, 'all_s': {k: [round(x, 3) for x in v] for k, v in runs.items()},
           'speedup_vs_plain': {k: med['plain'] / v for k, v in med.items()},
           'cpu_speedup_vs_plain': {k: med_cpu['plain'] / v for k, v in med_cpu.items()},
           'max_rel_diff_frozen': max_rel_diff(outs['frozen'], outs['plain'])}
    return emit(res, args.json)


if __name__ == '__main__':
    main()
