"""A full-size detector train step on CPU (forward + loss + backward): time and ``torch.profiler`` top entries.

    python bench/train_step.py [--cfg configs/cp_voxel_0075.yaml] [--sweeps 10] [--batch_size 1] [--threads 1,2]
                               [--repeats 3] [--profile] [--json out.json]
    python bench/train_step.py --compare /path/to/main_checkout --reps 2 --json compare.json

The model (default: the CP-Voxel 0.075 m teacher) gets random weights; the batch is ``synthetic_batch.make_batch``
(``--sweeps`` sweeps of a synthetic nuScenes-like cloud per sample, 20 random boxes). A step is ``model.train()``,
``model(batch)``, ``loss.backward()``, gradients cleared (no optimizer). Per thread count: a warm-up step, then
``--repeats`` timed steps (median wall s). ``--profile`` adds the top ``--top`` ops by self CPU time of one step
(at the first thread count). ``--rdd_root DIR`` imports ``rdd`` from another checkout; ``--compare DIR`` runs this
script alternately on ``DIR`` (before) and this checkout (after), ``--reps`` times each in fresh processes, and
reports median step times and after/before ratios.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _rdd_root_from_argv():
    for i, a in enumerate(sys.argv):
        if a == '--rdd_root' and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return None


sys.path.insert(0, os.path.abspath(_rdd_root_from_argv() or REPO))
sys.path.insert(1, HERE)

import torch  # noqa: E402

from bench_json import write_json  # noqa: E402
from synthetic_batch import make_batch  # noqa: E402


def train_step(model, batch):
    ret, _, _ = model(dict(batch))
    ret['loss'].backward()
    model.zero_grad(set_to_none=True)


def profile_top(model, batch, top):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, batch)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{'name': e.key, 'self_cpu_ms': round(e.self_cpu_time_total / 1000, 1),
             'cpu_total_ms': round(e.cpu_time_total / 1000, 1), 'calls': e.count} for e in rows]


def run_one(args):
    import rdd
    from rdd.config import cfg_from_yaml_file
    from rdd.models import build_model
    cfg = cfg_from_yaml_file(args.cfg)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = make_batch(cfg, args.sweeps, args.batch_size)
    res = {'rdd': os.path.dirname(os.path.dirname(os.path.abspath(rdd.__file__))), 'voxels': int(len(batch['voxels'])),
           'step_s': {}, 'all_step_s': {}}
    for i, threads in enumerate(int(t) for t in args.threads.split(',')):
        torch.set_num_threads(threads)
        train_step(model, batch)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            train_step(model, batch)
            times.append(time.perf_counter() - t0)
        res['step_s'][str(threads)] = statistics.median(times)
        res['all_step_s'][str(threads)] = [round(t, 3) for t in times]
        if args.profile and i == 0:
            res['profile_threads'] = threads
            res['profile_top'] = profile_top(model, batch, args.top)
        print(f'{threads} thread(s): {statistics.median(times):.3f} s/step ({len(batch["voxels"])} voxels)', flush=True)
    return res


def compare(args):
    runs = {'before': [], 'after': []}
    common = ['--cfg', args.cfg, '--sweeps', str(args.sweeps), '--batch_size', str(args.batch_size), '--threads',
              args.threads, '--repeats', str(args.repeats), '--top', str(args.top)] + (['--profile'] if args.profile
                                                                                         else [])
    for rep in range(args.reps):
        for label, root in (('before', args.compare), ('after', REPO)):
            with tempfile.NamedTemporaryFile(suffix='.json') as f:
                print(f'[rep {rep + 1}/{args.reps}] {label}: {root}', flush=True)
                subprocess.run([sys.executable, os.path.abspath(__file__), '--rdd_root', root, '--json', f.name,
                                *common], check=True)
                runs[label].append(json.load(open(f.name)))
    med = {label: {t: statistics.median(r['step_s'][t] for r in rs) for t in rs[0]['step_s']}
           for label, rs in runs.items()}
    return {'before_root': args.compare, 'after_root': REPO, 'reps': args.reps, 'median_step_s': med,
            'step_time_ratio_after_over_before': {t: med['after'][t] / med['before'][t] for t in med['after']},
            'profile_top': {label: rs[0].get('profile_top') for label, rs in runs.items()}, 'runs': runs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cfg', default=os.path.join(REPO, 'configs', 'cp_voxel_0075.yaml'))
    ap.add_argument('--sweeps', type=int, default=10)
    ap.add_argument('--batch_size', type=int, default=1)
    ap.add_argument('--threads', default='1,2')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--profile', action='store_true')
    ap.add_argument('--top', type=int, default=15)
    ap.add_argument('--rdd_root', default=None)
    ap.add_argument('--compare', default=None)
    ap.add_argument('--reps', type=int, default=2)
    ap.add_argument('--json', default=None)
    args = ap.parse_args(argv)
    res = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'command': ' '.join([os.path.basename(sys.executable)] + sys.argv), 'cfg': args.cfg,
           'sweeps': args.sweeps, 'batch_size': args.batch_size, 'loadavg_at_start': os.getloadavg()}
    res.update(compare(args) if args.compare else run_one(args))
    if args.compare:
        print(json.dumps({k: res[k] for k in ('median_step_s', 'step_time_ratio_after_over_before')}, indent=2))
        for label in ('before', 'after'):
            for row in res['profile_top'][label] or []:
                print(f"{label:6s} {row['self_cpu_ms']:9.1f} ms  {row['calls']:6d}x  {row['name']}")
    write_json(res, args.json)
    return res


if __name__ == '__main__':
    main()
