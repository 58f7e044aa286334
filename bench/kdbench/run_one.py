"""One benchmark cell in its own process: ``python bench/kdbench/run_one.py SPEC.json``.

Trains ``spec['cfg']`` through ``rdd.engine.train_pipeline`` (what ``tools/train.py`` runs; an interrupted run
resumes from its newest checkpoint in ``spec['out_dir']``), evaluates the last epoch with the devkit through
``rdd.engine.test_pipeline`` (what ``tools/test.py`` runs) and writes ``metrics.json`` beside the spec
(atomically). Spec keys: ``cfg``, ``epochs``, ``seed``, ``out_dir``, ``workers``, ``threads``, optional
``teacher_ckpt`` (KD configs).
"""
import json
import os
import sys
import time
from pathlib import Path

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

EXTRA_TAG = 'bench'
EVAL_SEED = 0


def common_argv(spec):
    argv = ['--cfg', spec['cfg'], '--workers', str(spec['workers']), '--extra_tag', EXTRA_TAG,
            '--output_root', str(spec['out_dir'])]
    if spec.get('teacher_ckpt'):
        argv += ['--teacher_ckpt', str(spec['teacher_ckpt'])]
    return argv


def ckpt_dir(spec):
    """Where ``tools/train.py`` keeps the cell's checkpoints when run from this checkout. The run folder under
    ``out_dir`` depends on where ``spec['cfg']`` lies relative to the checkout (``exp_group_and_tag``: a cache
    inside the repository gives ``kd_benchmark/teachers/teacher-<key>``, one outside it ``teacher-<key>``)."""
    from rdd.config import ROOT_DIR
    from rdd.engine.run_dir import RunDir, exp_group_and_tag
    group, tag = exp_group_and_tag(spec['cfg'], ROOT_DIR)
    return RunDir(spec['out_dir'], group, tag, EXTRA_TAG).ckpt_dir


def moved_checkpoint(spec):
    """The newest checkpoint another checkout left in another run folder under ``out_dir`` (an interrupted cell
    continued from elsewhere), when this checkout's own run folder has none; else None."""
    from rdd.engine.checkpoint_io import resume_candidates
    own = Path(ckpt_dir(spec))
    if resume_candidates(own):
        return None
    others = {p.parent for p in Path(spec['out_dir']).rglob('ckpt/*.pth')} - {own}
    found = [c for d in sorted(others) for c in resume_candidates(d)]
    return max(found, key=lambda c: (os.path.getmtime(c), c)) if found else None


def train(spec):
    """Train (or finish training) the cell, resuming from its newest checkpoint (also one left in another
    run folder of ``out_dir`` by another checkout); returns the last epoch's checkpoint path."""
    from rdd.engine.hooks import CheckpointHook
    from rdd.engine.train_pipeline import main as train_main
    argv = common_argv(spec) + ['--epochs', str(spec['epochs']), '--seed', str(spec['seed']), '--skip_eval',
                                '--max_ckpt_save_num', '1', '--logger_iter_interval', '50']
    moved = moved_checkpoint(spec)
    if moved is not None:
        print(f'[run_one] resuming from {moved} (written by another checkout; this one trains into '
              f'{ckpt_dir(spec)})', flush=True)
        argv += ['--ckpt', str(moved)]
    trainer = train_main(argv)
    ckpt = Path(trainer.hook(CheckpointHook).ckpt_dir) / f'checkpoint_epoch_{spec["epochs"]}.pth'
    if not ckpt.is_file() and moved is not None and Path(moved).name == ckpt.name:
        ckpt = Path(moved)  # the other checkout had trained it to the end: nothing was left to train here
    if not ckpt.is_file():
        raise FileNotFoundError(f'training finished without {ckpt}')
    return ckpt


def evaluate(spec, ckpt):
    """The devkit metrics of ``ckpt`` on the config's test split (``tools/test.py --ckpt``). The generators are
    seeded first (``EVAL_SEED``): the nuScenes loader draws ``MAX_SWEEPS - 1`` of a frame's sweeps at random even
    at test time (as OpenPCDet), so every cell is evaluated on the same points."""
    from rdd.engine.rng import set_random_seed
    from rdd.engine.test_pipeline import main as test_main
    set_random_seed(EVAL_SEED)
    return test_main(common_argv(spec) + ['--ckpt', str(ckpt)])


def metrics_record(result):
    """mAP, NDS, the TP errors and per-class APs (``AP_<class>``) of a devkit ``result_dict``."""
    keep = ('mAP', 'NDS', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE')
    out = {k: float(result[k]) for k in keep if k in result}
    out['AP'] = {k[3:]: float(v) for k, v in result.items() if k.startswith('AP_')}
    return out


def main(spec_path):
    spec_path = Path(spec_path)
    spec = json.loads(spec_path.read_text())
    import torch
    torch.set_num_threads(int(spec.get('threads', 1)))
    tic = time.time()
    ckpt = train(spec)
    train_s = time.time() - tic
    record = metrics_record(evaluate(spec, ckpt))
    record.update(ckpt=str(ckpt), train_s=round(train_s, 1), eval_s=round(time.time() - tic - train_s, 1))
    tmp = spec_path.with_name(f'.metrics.json.tmp{os.getpid()}')
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, spec_path.with_name('metrics.json'))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
