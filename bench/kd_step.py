"""Cost of a distillation step: student alone vs student + logit KD vs student + RDD, same batch, one process.

    python bench/kd_step.py [--json out.json] [--sweeps 1] [--repeats 3] [--threads N]

Models: CP-Voxel-S student and CP-Voxel (0.075 m) teacher at full size (180 x 180 BEV), random weights (a
random teacher checkpoint is written to a temp dir and loaded strictly, as in training). Input: one synthetic
nuScenes-like cloud (``rdd.datasets.synthetic.make_point_cloud``) with ``--sweeps`` sweeps (default 1: a
REDUCED input, ~1/10 of a 10-sweep nuScenes frame's voxels, because a full 10-sweep step takes tens of seconds
per variant on 2 CPU cores) and 20 random GT boxes. RDD (configs/rdd_cp_voxel_s.yaml's loss) gets 100 teacher +
100 student proposals per sample: after the decoding (which still runs, at RDD's score threshold 0.3) the
decoded boxes are replaced by fixed random boxes with scores in [0.3, 1]; the loss's own filters then apply.
With random weights few cells pass 0.3, so decoding is cheaper than with a trained model.

A step = teacher forward (no grad) + student forward + losses + backward (no optimizer). The three variants
are warmed up, then run round-robin ``--repeats`` times (a shared machine's load changes hit all alike);
``step_s`` / ``step_cpu_s`` are the median wall / process-CPU seconds, ``best_step_s`` the fastest run (the
least disturbed by other processes), ``peak_mb`` the peak resident memory
during a step above the resident memory just before it (sampled every 2 ms); ``rdd_loss_s`` the RDD loss
alone, forward + backward on the step's tapped tensors (median). Output: JSON with ``student``, ``logit_kd``,
``rdd``, ``ratios`` and ``meta``.
"""
import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KD_CFG = os.path.join(ROOT, 'configs', 'rdd_cp_voxel_s.yaml')
LOGIT_BENCH = {'NAME': 'LogitKDLoss', 'WEIGHT': 1.0}


def _rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


class PeakRSS:
    """Context manager sampling the resident set size in a thread; ``delta_mb`` = peak - start."""

    def __enter__(self):
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.delta_mb = self.peak - self.start


def make_batch(cfg, sweeps, num_boxes=20, seed=0):
    """One-sample batch on the KD config's grid (voxelized with rdd's Voxelizer)."""
    from rdd.datasets.processor.voxelizer import Voxelizer, voxelize_batch
    from rdd.datasets.synthetic import make_point_cloud
    from rdd.geometry import voxel_processor_cfg
    from rdd.models import model_geometry
    geom = model_geometry(cfg)
    pcr = geom.point_cloud_range
    pts = make_point_cloud(num_sweeps=sweeps, seed=seed).astype(np.float32)
    keep = np.all((pts[:, :3] >= pcr[:3]) & (pts[:, :3] < pcr[3:]), axis=1)
    pts = torch.from_numpy(np.concatenate([np.zeros((int(keep.sum()), 1), np.float32), pts[keep]], axis=1))
    vox = Voxelizer.from_processor_config(voxel_processor_cfg(cfg.DATA_CONFIG), pcr, pts.shape[1] - 1, 'train')
    voxels, coords, num = voxelize_batch(pts, vox)
    rng = np.random.RandomState(seed)
    gt = np.zeros((1, num_boxes, 10), np.float32)
    gt[0, :, 0:2] = rng.uniform(0.8 * pcr[0], 0.8 * pcr[3], (num_boxes, 2))
    gt[0, :, 2] = -1.0
    gt[0, :, 3:6] = rng.uniform([1.0, 0.8, 1.0], [5.0, 2.5, 2.5], (num_boxes, 3))
    gt[0, :, 6] = rng.uniform(-np.pi, np.pi, num_boxes)
    gt[0, :, 9] = rng.randint(1, 11, num_boxes)
    return {'batch_size': 1, 'points': pts, 'voxels': voxels, 'voxel_coords': coords, 'voxel_num_points': num,
            'gt_boxes': torch.from_numpy(gt), 'use_lead_xyz': True, 'frame_id': np.array(['bench'])}


def fixed_boxes(n, seed, half_range):
    rng = np.random.RandomState(seed)
    boxes = np.zeros((n, 9), np.float32)
    boxes[:, 0:2] = rng.uniform(-0.95 * half_range, 0.95 * half_range, (n, 2))
    boxes[:, 3:6] = rng.uniform([0.6, 0.6, 1.0], [6.0, 2.5, 3.0], (n, 3))
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n)
    return {'pred_boxes': torch.from_numpy(boxes), 'pred_scores': torch.from_numpy(rng.uniform(0.3, 1.0, n)).float(),
            'pred_labels': torch.from_numpy(rng.randint(1, 11, n)).long()}


def kd_step(d, batch, proposals):
    """One Distiller training step through its public pieces; returns (tb, teacher_out, student_out)."""
    from rdd.distill.context import ModelFacts
    half = float(ModelFacts.from_model(d.student).grid.x_max)
    t_out = d.forward_teacher(batch)
    if proposals:
        t_out['boxes'] = [fixed_boxes(100, 1, half)]
    ret, tb, _, s_out = d.forward_student(dict(batch))
    if proposals:
        s_out['boxes'] = [fixed_boxes(100, 2, half)]
    loss_kd, kd_tb = d.kd_forward(t_out, s_out, batch)
    (d.loss_det_weight * ret['loss'] + loss_kd).backward()
    tb.update(kd_tb)
    return tb, t_out, s_out


def measure(fn):
    """One call: ``(wall_s, cpu_s, peak_mb, out)``."""
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, mem.delta_mb, out


def timed(fn, repeats):
    fn()  # warm-up
    runs = [measure(fn) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), max(r[2] for r in runs), runs[-1][3]


def interleaved(fns, repeats):
    """Warm every variant up, then run them round-robin ``repeats`` times (so that a load change on a shared
    machine hits all of them alike); per variant the median wall / CPU seconds and the largest peak."""
    for fn in fns.values():
        fn()
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(measure(fn))
    return {name: {'step_s': statistics.median(r[0] for r in rs), 'best_step_s': min(r[0] for r in rs),
                   'step_cpu_s': statistics.median(r[1] for r in rs), 'peak_mb': max(r[2] for r in rs),
                   'all_step_s': [round(r[0], 3) for r in rs], 'out': rs[-1][3]}
            for name, rs in runs.items()}


def _rdd_loss_of(distiller):
    """The distiller's RDD loss module (KD losses are keyed by name, not position)."""
    from rdd.distill.rdd import RDDLoss
    found = [m for m in distiller.kd_losses.values() if isinstance(m, RDDLoss)]
    if len(found) != 1:
        raise SystemExit(f'--cfg must have exactly one RDDLoss in MODEL.KD_LOSSES, found {len(found)}')
    return found[0]


def rdd_loss_time(rdd, t_out, s_out, batch, repeats):
    def leafs(d):
        out = dict(d)
        out['spatial_features_2d'] = d['spatial_features_2d'].detach().requires_grad_(True)
        out['pred_dicts'] = [{k: v.detach().requires_grad_(True) for k, v in p.items()} for p in d['pred_dicts']]
        return out

    def run():
        loss, tb = rdd(t_out, leafs(s_out), batch)
        loss.backward()
        return tb
    med, _, tb = timed(run, repeats)
    return med, tb


def main(argv=None):
    parser = argparse.ArgumentParser(description='KD step cost: student / + logit KD / + RDD')
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--sweeps', type=int, default=1, help='sweeps in the input cloud (10 = full nuScenes)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    parser.add_argument('--cfg', default=KD_CFG, help='KD config whose first KD loss is RDD (tests use a tiny one)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from rdd.config import cfg_from_yaml_file
    from rdd.distill import apply_teacher_ckpt
    from rdd.models import build_model, build_network, model_geometry

    cfg = cfg_from_yaml_file(args.cfg)
    tmp = tempfile.mkdtemp(prefix='kd_bench_')
    ckpt = os.path.join(tmp, 'teacher.pth')
    torch.manual_seed(0)
    torch.save({'model_state': build_model(cfg.MODEL.TEACHER).state_dict()}, ckpt)
    apply_teacher_ckpt(cfg, ckpt)
    batch = make_batch(cfg, args.sweeps)
    results = {'meta': {'config': os.path.relpath(args.cfg, ROOT), 'device': 'cpu',
                        'threads': torch.get_num_threads(), 'sweeps': args.sweeps,
                        'points': int(batch['points'].shape[0]), 'voxels': int(batch['voxels'].shape[0]),
                        'reduced_input': args.sweeps < 10, 'repeats': args.repeats}}

    def distiller(losses):
        c = copy.deepcopy(cfg)
        c.MODEL.KD_LOSSES = losses
        torch.manual_seed(1)
        d = build_network(c.MODEL, num_class=len(c.CLASS_NAMES), dataset=model_geometry(c))
        return d.train()

    d_logit = distiller([dict(LOGIT_BENCH)])
    d_rdd = distiller([copy.deepcopy(cfg.MODEL.KD_LOSSES[0])])  # the shipped RDD config
    student = build_model(cfg.MODEL.STUDENT).train()
    student.load_state_dict(d_logit.student.state_dict())

    def student_step():
        ret, tb, _ = student(dict(batch))
        ret['loss'].backward()
        return tb
    res = interleaved({'student': student_step,
                       'logit_kd': lambda: kd_step(d_logit, batch, proposals=False),
                       'rdd': lambda: kd_step(d_rdd, batch, proposals=True)}, args.repeats)
    _, t_out, s_out = res['rdd'].pop('out')
    for name in ('student', 'logit_kd'):
        res[name].pop('out')
        results[name] = res[name]
    loss_s, rtb = rdd_loss_time(_rdd_loss_of(d_rdd), t_out, s_out, batch, args.repeats)
    results['rdd'] = dict(res['rdd'], rdd_loss_s=loss_s, proposals=rtb['rdd_pairs_proposed'],
                          pairs_kept=rtb['rdd_pairs_kept'])
    results['meta']['bev'] = list(t_out['spatial_features_2d'].shape[-2:])
    r_time, l_time = results['rdd']['step_s'], results['logit_kd']['step_s']
    results['ratios'] = {'rdd_loss_over_rdd_step': loss_s / r_time, 'rdd_step_over_logit_step': r_time / l_time,
                         'best_rdd_step_over_best_logit_step':
                             results['rdd']['best_step_s'] / results['logit_kd']['best_step_s'],
                         'rdd_loss_over_best_rdd_step': loss_s / results['rdd']['best_step_s'],
                         'rdd_step_over_logit_step_cpu':
                             results['rdd']['step_cpu_s'] / results['logit_kd']['step_cpu_s'],
                         'targets': {'rdd_loss_over_rdd_step': 0.05, 'rdd_step_over_logit_step': 1.10}}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, 'w') as f:
            f.write(text + '\n')
    return results


if __name__ == '__main__':
    main()
