"""Cost of a distillation step: student alone vs student + PP logit KD vs student + RDD, same batch, one process.

    python bench/kd_step.py [--json out.json] [--sweeps 1] [--repeats 3] [--threads N] [--cfg KD_CONFIG]

Models: the KD config's student and teacher at full size (default configs/rdd_cp_voxel_s.yaml: CP-Voxel-S and the
0.1 m CP-Voxel teacher, 128 x 128 BEV), random weights (a random teacher checkpoint is written to a temp dir and
loaded strictly, as in training). Input: one synthetic nuScenes-like cloud (``rdd.datasets.synthetic.
make_point_cloud``) with ``--sweeps`` sweeps (default 1: a REDUCED input, ~1/10 of a 10-sweep nuScenes frame's
voxels, because a full 10-sweep step takes tens of seconds per variant on 2 CPU cores) and 20 random GT boxes.
RDD is the config's RDDLoss entry as shipped (the paper's form): its proposals are the peaks of the models' own
heatmaps (a random-weight head's initial bias puts most peaks just above SCORE_THRESH 0.1, so both sources are
usually at the 100-per-sample cap: about the pair count of a trained model's top 100). PP logit KD is the
``LogitKDLoss`` entry of configs/kd_logit_cp_voxel_s.yaml.

A step = teacher forward (no grad) + student forward + losses + backward (no optimizer). The three variants
are warmed up, then run round-robin ``--repeats`` times (a shared machine's load changes hit all alike);
``step_s`` / ``step_cpu_s`` are the median wall / process-CPU seconds, ``best_step_s`` the fastest run (the
least disturbed by other processes), ``peak_mb`` the peak resident memory
during a step above the resident memory just before it (sampled every 2 ms); ``rdd_loss_s`` the RDD loss
alone, forward + backward on the step's tapped tensors (median of ``--repeats`` runs, interleaved with repeated
RDD steps so that ``rdd_loss_over_rdd_step`` compares runs made side by side). Output: JSON with ``student``,
``logit_kd``, ``rdd``, ``ratios`` (wall-clock medians, best runs and process-CPU medians) and ``meta``.

``--teacher-share`` measures instead the teacher's share of an RDD step (the config's RDDLoss entry) before and
after the frozen teacher, side by side: two Distillers with the same weights, one running the teacher itself under
``no_grad`` (``Distiller.unfold_teacher``: the forward before folding), one its BN-folded copy under
``inference_mode`` (the default with ``TEACHER_BN: eval``). Variants ``teacher_plain`` / ``teacher_frozen``
(``forward_teacher`` alone), ``teacher_frozen_bf16`` (the same with ``TEACHER_PRECISION: bf16``: dense layers
autocast to bf16, sparse convs fp32) and ``step_plain`` / ``step_frozen`` (a whole step), run round-robin as above.
Output: JSON ``teacher_share`` with the five variants, ``share_plain`` / ``share_frozen`` (teacher / step, medians),
``teacher_speedup`` / ``step_speedup`` (plain / frozen; wall and CPU), ``teacher_bf16_speedup`` (plain / frozen
bf16) and ``max_rel_diff`` (``max_rel_diff_bf16``) of the tapped teacher
maps and ``rdd_loss_rel_diff`` of the step's RDD term between the two.
"""
import argparse
import copy
import datetime
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_json import emit  # noqa: E402  (this script's folder is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KD_CFG = os.path.join(ROOT, 'configs', 'rdd_cp_voxel_s.yaml')
LOGIT_CFG = os.path.join(ROOT, 'configs', 'kd_logit_cp_voxel_s.yaml')  # its KD_LOSSES entry is the PP logit KD


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


def kd_step(d, batch):
    """One Distiller training step through its public pieces; returns (tb, teacher_out, student_out)."""
    t_out = d.forward_teacher(batch)
    ret, tb, _, s_out = d.forward_student(dict(batch))
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
    return next(m for m in distiller.kd_losses.values() if isinstance(m, RDDLoss))


def rdd_loss_step(rdd, t_out, s_out, batch):
    """The RDD loss alone on a step's tapped tensors (student tensors as fresh leaves): forward + backward."""
    def leafs(d):
        out = dict(d)
        out['spatial_features_2d'] = d['spatial_features_2d'].detach().requires_grad_(True)
        out['pred_dicts'] = [{k: v.detach().requires_grad_(True) for k, v in p.items()} for p in d['pred_dicts']]
        return out

    def run():
        loss, tb = rdd(t_out, leafs(s_out), batch)
        loss.backward()
        return tb
    return run


def _max_rel_diff(a, b):
    """Largest relative difference (to the reference's max abs) over the tapped maps of two teacher outputs."""
    pairs = [(a[k], b[k]) for k in a if torch.is_tensor(a[k])]
    pairs += [(x[k], y[k]) for x, y in zip(a['pred_dicts'], b['pred_dicts']) for k in y]
    return max((x - y).abs().max().item() / max(y.abs().max().item(), 1e-12) for x, y in pairs)


def teacher_share(make_distiller, rdd_entry, batch, repeats):
    """Plain vs frozen teacher, side by side: teacher forward alone and whole RDD steps (see the docstring)."""
    d_frozen, d_plain = make_distiller([rdd_entry]), make_distiller([rdd_entry])
    d_bf16 = make_distiller([rdd_entry], TEACHER_PRECISION='bf16')
    d_plain.unfold_teacher()
    res = interleaved({'teacher_plain': lambda: d_plain.forward_teacher(batch),
                       'teacher_frozen': lambda: d_frozen.forward_teacher(batch),
                       'teacher_frozen_bf16': lambda: d_bf16.forward_teacher(batch),
                       'step_plain': lambda: kd_step(d_plain, batch),
                       'step_frozen': lambda: kd_step(d_frozen, batch)}, repeats)
    out = {name: res[name].pop('out') for name in res}
    med = {name: r['step_s'] for name, r in res.items()}
    cpu = {name: r['step_cpu_s'] for name, r in res.items()}
    loss = {k: out[f'step_{k}'][0]['kd/RDDLoss'] for k in ('plain', 'frozen')}  # the RDD term of the step
    res.update(share_plain=med['teacher_plain'] / med['step_plain'],
               share_frozen=med['teacher_frozen'] / med['step_frozen'],
               share_plain_cpu=cpu['teacher_plain'] / cpu['step_plain'],
               share_frozen_cpu=cpu['teacher_frozen'] / cpu['step_frozen'],
               teacher_speedup=med['teacher_plain'] / med['teacher_frozen'],
               teacher_speedup_cpu=cpu['teacher_plain'] / cpu['teacher_frozen'],
               teacher_bf16_speedup=med['teacher_plain'] / med['teacher_frozen_bf16'],
               teacher_bf16_speedup_cpu=cpu['teacher_plain'] / cpu['teacher_frozen_bf16'],
               max_rel_diff_bf16=_max_rel_diff(out['teacher_frozen_bf16'], out['teacher_plain']),
               step_speedup=med['step_plain'] / med['step_frozen'],
               step_speedup_cpu=cpu['step_plain'] / cpu['step_frozen'],
               max_rel_diff=_max_rel_diff(out['teacher_frozen'], out['teacher_plain']),
               rdd_loss_rel_diff=abs(loss['frozen'] - loss['plain']) / max(abs(loss['plain']), 1e-12),
               target_teacher_speedup=1.2)
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description='KD step cost: student / + logit KD / + RDD')
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--sweeps', type=int, default=1, help='sweeps in the input cloud (10 = full nuScenes)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    parser.add_argument('--cfg', default=KD_CFG, help='KD config with one RDDLoss (tests use a tiny one)')
    parser.add_argument('--teacher-share', action='store_true',
                        help='only the teacher share of an RDD step, plain vs frozen teacher (see the docstring)')
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
                        'reduced_input': args.sweeps < 10, 'repeats': args.repeats,
                        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                        'command': ' '.join(['python'] + sys.argv), 'loadavg': os.getloadavg()}}

    def distiller(losses, **model_keys):
        c = copy.deepcopy(cfg)
        c.MODEL.KD_LOSSES = losses
        c.MODEL.update(model_keys)
        torch.manual_seed(1)
        d = build_network(c.MODEL, num_class=len(c.CLASS_NAMES), dataset=model_geometry(c))
        return d.train()

    rdd_entries = [e for e in cfg.MODEL.KD_LOSSES if e.NAME == 'RDDLoss']
    if len(rdd_entries) != 1:
        raise SystemExit(f'--cfg must have exactly one RDDLoss in MODEL.KD_LOSSES, found {len(rdd_entries)}')
    if args.teacher_share:
        results['teacher_share'] = teacher_share(distiller, copy.deepcopy(rdd_entries[0]), batch, args.repeats)
        return emit(results, args.json)
    d_logit = distiller([copy.deepcopy(cfg_from_yaml_file(LOGIT_CFG).MODEL.KD_LOSSES[0])])
    d_rdd = distiller([copy.deepcopy(rdd_entries[0])])  # the shipped RDD config
    student = build_model(cfg.MODEL.STUDENT).train()
    student.load_state_dict(d_logit.student.state_dict())

    def student_step():
        ret, tb, _ = student(dict(batch))
        ret['loss'].backward()
        return tb
    _, t_out, s_out = kd_step(d_rdd, batch)  # the tapped tensors the RDD loss is timed on
    res = interleaved({'student': student_step,
                       'logit_kd': lambda: kd_step(d_logit, batch),
                       'rdd': lambda: kd_step(d_rdd, batch),
                       'rdd_loss': rdd_loss_step(_rdd_loss_of(d_rdd), t_out, s_out, batch)}, args.repeats)
    rtb = res['rdd_loss'].pop('out')
    for name in ('student', 'logit_kd', 'rdd'):
        res[name].pop('out')
        results[name] = res[name]
    loss_s = res['rdd_loss']['step_s']
    results['rdd'].update(rdd_loss_s=loss_s, rdd_loss_cpu_s=res['rdd_loss']['step_cpu_s'],
                          rdd_loss_all_s=res['rdd_loss']['all_step_s'],
                          pairs_per_sample=rtb['rdd_pairs'], teacher_pairs=rtb['rdd_pairs_teacher'],
                          student_pairs=rtb['rdd_pairs_student'], kept_fraction=rtb['rdd_kept_fraction'])
    results['meta']['bev'] = list(t_out['spatial_features_2d'].shape[-2:])
    r_time, l_time = results['rdd']['step_s'], results['logit_kd']['step_s']
    results['ratios'] = {'rdd_loss_over_rdd_step': loss_s / r_time, 'rdd_step_over_logit_step': r_time / l_time,
                         'best_rdd_step_over_best_logit_step':
                             results['rdd']['best_step_s'] / results['logit_kd']['best_step_s'],
                         'rdd_loss_over_best_rdd_step': loss_s / results['rdd']['best_step_s'],
                         'rdd_step_over_logit_step_cpu':
                             results['rdd']['step_cpu_s'] / results['logit_kd']['step_cpu_s'],
                         'rdd_loss_over_rdd_step_cpu': res['rdd_loss']['step_cpu_s'] / results['rdd']['step_cpu_s'],
                         'targets': {'rdd_loss_over_rdd_step': 0.05, 'rdd_step_over_logit_step': 1.10}}
    return emit(results, args.json)


if __name__ == '__main__':
    main()
