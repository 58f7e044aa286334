"""The first GPU measurement, prepared: one command, a few minutes on one GPU, JSON out.

    python bench/gpu_check.py [--json gpu_check.json]            # on a CUDA machine (about 5 min on one GPU)
    python bench/gpu_check.py --device cpu --iters 2 [...]       # the same code path on CPU (smoke test)

Without ``--device cpu`` on a machine without CUDA it prints that no CUDA device is present and exits 0.

1. ``pytest -m cuda tests`` (the CUDA-marked tests; skipped on CPU).
2. Paper-protocol distillation steps: the 0.1 m CP-Voxel teacher (``--teacher_cfg``, random weights written to a
   checkpoint and loaded strictly, as in training), the CP-Voxel-S student and the KD config ``--kd_cfg``
   (``configs/rdd_cp_voxel_s.yaml``: ``RDDLoss``), built through the normal config path
   (``MODEL.TEACHER: {_BASE_CONFIG_: <teacher_cfg>}`` as that config's header says); beside it the student alone
   and the same Distiller with ``configs/kd_logit_cp_voxel_s.yaml``'s ``LogitKDLoss``. Batch ``--batch_size``
   of nuScenes-size synthetic clouds (``--sweeps`` sweeps each). Per variant, with and without AMP (fp16 autocast
   + GradScaler; CUDA only): ``--iters`` timed Adam steps after 2 warm-up steps, and the peak GPU memory.
3. The same fixed batch (1 sample) through the RDD Distiller on CPU and on the device: losses within 1e-3.
4. ``torch.distributed`` initialised with one process (nccl on CUDA, gloo on CPU) and one all_reduce.
Every step records its error instead of stopping the run.
"""
import argparse
import copy
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(1, HERE)

import torch  # noqa: E402

from synthetic_batch import make_batch  # noqa: E402

LOGIT_CFG = os.path.join(REPO, 'configs', 'kd_logit_cp_voxel_s.yaml')


def guarded(fn):
    """Run ``fn()``; on error return ``{'error': ...}`` so that one failure does not stop the check."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001  (a report, not a library)
        return {'error': f'{type(err).__name__}: {err}', 'traceback': traceback.format_exc(limit=6)}


def load_kd_cfg(kd_cfg, teacher_cfg, ckpt_dir):
    """The KD config with ``MODEL.TEACHER`` from ``teacher_cfg`` (if given) and a random-weight teacher checkpoint."""
    from rdd.config import cfg_from_yaml_file
    from rdd.models import build_model
    path = kd_cfg
    if teacher_cfg:
        path = os.path.join(ckpt_dir, 'kd.yaml')
        with open(path, 'w') as f:
            f.write(f"_BASE_CONFIG_: {os.path.abspath(kd_cfg)}\nMODEL:\n"
                    f"    TEACHER: {{_BASE_CONFIG_: {os.path.abspath(teacher_cfg)}}}\n")
    cfg = cfg_from_yaml_file(path)
    torch.manual_seed(0)
    ckpt = os.path.join(ckpt_dir, 'teacher.pth')
    torch.save({'model_state': build_model(cfg.MODEL.TEACHER).state_dict()}, ckpt)
    cfg.MODEL.TEACHER_CKPT = ckpt
    return cfg


def build_variants(cfg):
    """``{'student', 'logit_kd', 'rdd'}`` -> (model builder) on CPU."""
    from rdd.config import cfg_from_yaml_file
    from rdd.models import build_model, build_network, model_geometry
    logit_losses = cfg_from_yaml_file(LOGIT_CFG).MODEL.KD_LOSSES

    def distiller(losses):
        c = copy.deepcopy(cfg)
        if losses is not None:
            c.MODEL.KD_LOSSES = copy.deepcopy(losses)
        torch.manual_seed(1)
        return build_network(c.MODEL, num_class=len(c.CLASS_NAMES), dataset=model_geometry(c))

    def student():
        torch.manual_seed(1)
        return build_model(cfg.MODEL.STUDENT)
    return {'student': student, 'logit_kd': lambda: distiller(logit_losses), 'rdd': lambda: distiller(None)}


def to_device(batch, device):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_steps(model, batch, device, iters, amp):
    """Adam steps of ``model`` on ``batch``: median / mean step seconds and peak memory (MiB)."""
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    scaler = torch.amp.GradScaler('cuda', enabled=amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            ret, _, _ = model(dict(batch))
        scaler.scale(ret['loss']).backward()
        scaler.step(opt)
        scaler.update()
        return float(ret['loss'].detach())

    for _ in range(2):
        step()
    sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        losses.append(step())
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else None
    return {'median_step_s': statistics.median(times), 'mean_step_s': statistics.mean(times),
            'samples_per_s': batch['batch_size'] / statistics.median(times), 'peak_mem_mib': peak,
            'last_loss': losses[-1], 'all_finite': all(math.isfinite(x) for x in losses)}


def step_benchmarks(cfg, batch, device, iters):
    res = {}
    for name, build in build_variants(cfg).items():
        for amp in ([False, True] if device.type == 'cuda' else [False]):
            key = f'{name}_amp' if amp else name
            res[key] = guarded(lambda: time_steps(build(), batch, device, iters, amp))
            print(f'{key:14s} {json.dumps({k: v for k, v in res[key].items() if k != "traceback"})}', flush=True)
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    return res


def cpu_vs_device_loss(cfg, device, sweeps):
    """One fixed 1-sample batch through the RDD Distiller (same weights) on CPU and on ``device``."""
    batch = make_batch(cfg, sweeps=sweeps, batch_size=1, seed=7)
    model = build_variants(cfg)['rdd']().train()
    state = copy.deepcopy(model.state_dict())
    ret_cpu, _, _ = model(dict(batch))
    model.load_state_dict(state)
    ret_dev, _, _ = model.to(device)(to_device(batch, device))
    a, b = float(ret_cpu['loss'].detach()), float(ret_dev['loss'].detach().cpu())
    rel = abs(a - b) / max(abs(a), 1e-12)
    return {'loss_cpu': a, 'loss_device': b, 'rel_diff': rel, 'ok': rel <= 1e-3, 'tolerance': 1e-3}


def distributed_init(device):
    import torch.distributed as dist
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    port = 29500 + os.getpid() % 1000
    dist.init_process_group(backend, init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        t = torch.ones(4, device=device)
        dist.all_reduce(t)
        return {'backend': backend, 'world_size': dist.get_world_size(), 'all_reduce_ok': bool((t == 1).all())}
    finally:
        dist.destroy_process_group()


def cuda_tests():
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-m', 'cuda', 'tests'], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    return {'returncode': proc.returncode, 'ok': proc.returncode == 0, 'tail': proc.stdout[-1500:]}


def environment(device):
    env = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
           'command': ' '.join([os.path.basename(sys.executable)] + sys.argv), 'device': str(device),
           'torch': torch.__version__, 'platform': platform.platform()}
    if device.type == 'cuda':
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    try:
        import spconv
        env['spconv'] = getattr(spconv, '__version__', '?')
    except ImportError:
        env['spconv'] = None
    return env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    ap.add_argument('--iters', type=int, default=20)
    ap.add_argument('--batch_size', type=int, default=4)
    ap.add_argument('--sweeps', type=int, default=10, help='sweeps per synthetic cloud (10: nuScenes size)')
    ap.add_argument('--kd_cfg', default=os.path.join(REPO, 'configs', 'rdd_cp_voxel_s.yaml'))
    ap.add_argument('--teacher_cfg', default=os.path.join(REPO, 'configs', 'cp_voxel_01.yaml'),
                    help="teacher config ('' keeps the KD config's own teacher)")
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    ap.add_argument('--json', default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: no CUDA device is present; nothing to check (use --device cpu for the CPU smoke run)')
        if args.json:
            with open(args.json, 'w') as f:
                json.dump({'cuda_available': False}, f)
        return 0
    device = torch.device(args.device)
    t_start = time.perf_counter()
    res = {'environment': environment(device), 'args': vars(args)}
    res['cuda_tests'] = guarded(cuda_tests) if device.type == 'cuda' else {'skipped': 'needs CUDA'}
    with tempfile.TemporaryDirectory(prefix='rdd_gpu_check_') as tmp:
        cfg = load_kd_cfg(args.kd_cfg, args.teacher_cfg, tmp)
        batch = to_device(make_batch(cfg, sweeps=args.sweeps, batch_size=args.batch_size), device)
        res['batch'] = {'batch_size': args.batch_size, 'sweeps': args.sweeps, 'points': int(len(batch['points'])),
                        'voxels': int(len(batch['voxels']))}
        res['steps'] = step_benchmarks(cfg, batch, device, args.iters)
        res['cpu_vs_device_loss'] = guarded(lambda: cpu_vs_device_loss(cfg, device, min(args.sweeps, 1)))
    res['distributed'] = guarded(lambda: distributed_init(device))
    res['total_s'] = time.perf_counter() - t_start
    print(json.dumps({k: res[k] for k in ('cuda_tests', 'cpu_vs_device_loss', 'distributed', 'total_s')},
                     indent=2, default=str))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2, default=str)
    return 0


if __name__ == '__main__':
    sys.exit(main())
