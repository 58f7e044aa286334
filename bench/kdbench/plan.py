"""From a protocol to jobs: run configs, cache keys, availability, and the wall-time estimate."""
import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .execute import Job
from .runs import (TEACHER_SEED, cache_key, num_epochs, run_config_path, unavailable_reason, write_random_teacher,
                   write_run_config)
from .run_one import ckpt_dir


@dataclass
class Plan:
    teacher: Job
    jobs: List[Job]                                               # the available cells
    unavailable: Dict[Tuple[str, str], str] = field(default_factory=dict)  # (student, row) -> why


def teacher_ckpt_path(folder, cfg_path, epochs):
    """Where ``run_one`` leaves the teacher's last checkpoint when it trains ``cfg_path`` into ``folder``."""
    return Path(ckpt_dir({'cfg': str(cfg_path), 'out_dir': str(folder)})) / f'checkpoint_epoch_{epochs}.pth'


def teacher_job(proto, out_dir, cache_dir, data_fp, workers):
    """The teacher's job. Its config is written under ``out_dir/configs`` (hashed) and copied into its cache
    folder, which it trains from, so that the cached checkpoint's path does not depend on ``out_dir``."""
    cfg = write_run_config(Path(out_dir) / 'configs' / 'teacher.yaml', proto.teacher, proto.data.root)
    epochs = proto.teacher_epochs or num_epochs(cfg)
    key = cache_key(cfg, epochs, TEACHER_SEED, data_fp)
    folder = Path(cache_dir) / f'teacher-{key}'
    cached_cfg = folder / 'teacher.yaml'
    if not cached_cfg.is_file():
        write_run_config(cached_cfg, proto.teacher, proto.data.root)
    spec = {'cfg': str(cached_cfg), 'epochs': epochs, 'seed': TEACHER_SEED, 'workers': workers}
    info = {'row': 'teacher', 'kind': 'TEACHER', 'student': None, 'seed': TEACHER_SEED, 'key': key,
            'config': str(cached_cfg)}
    return Job(name='teacher', folder=folder, spec=spec, info=info)


def teacher_checkpoint(job):
    """The teacher's last checkpoint: from its result when it is trained, else where it will be."""
    if job.finished():
        return Path(job.load_result()['ckpt'])
    return teacher_ckpt_path(job.folder, job.spec['cfg'], job.spec['epochs'])


def build_plan(proto, out_dir, cache_dir, data_fp, workers=1) -> Plan:
    """Write every run config under ``out_dir/configs`` and return the jobs; a row whose config does not build
    (a KD loss not registered yet, a key it rejects) is listed in ``Plan.unavailable`` instead."""
    teacher = teacher_job(proto, out_dir, cache_dir, data_fp, workers)
    real_ckpt = teacher_checkpoint(teacher)
    probe_ckpt = real_ckpt if real_ckpt.is_file() else Path(out_dir) / 'probe' / 'random_teacher.pth'
    plan = Plan(teacher=teacher, jobs=[])
    checked: Dict[Tuple[str, str], Optional[str]] = {}
    for run in proto.runs():
        cell = (run.student.key, run.row.key)
        is_kd = run.row.kd_losses is not None
        cfg = run_config_path(out_dir, run)
        if cell not in checked:
            write_run_config(cfg, run.student.kd_config if is_kd else run.student.config, proto.data.root,
                             run.row.kd_losses, real_ckpt if is_kd else None)
            if is_kd and not probe_ckpt.is_file():
                write_random_teacher(proto.teacher, probe_ckpt)
            checked[cell] = unavailable_reason(run.row, cfg, probe_ckpt)
            if checked[cell]:
                plan.unavailable[cell] = checked[cell]
        if checked[cell]:
            continue
        epochs = proto.student_epochs or num_epochs(cfg)
        key = cache_key(cfg, epochs, run.seed, data_fp, teacher.info['key'] if is_kd else None)
        info = {'row': run.row.key, 'kind': 'KD' if is_kd else 'STUDENT', 'student': run.student.key,
                'seed': run.seed, 'key': key, 'config': str(cfg)}
        spec = {'cfg': str(cfg), 'epochs': epochs, 'seed': run.seed, 'workers': workers}
        folder = Path(out_dir) / 'runs' / run.student.key / run.row.key / f'seed{run.seed}-{key}'
        plan.jobs.append(Job(name=run.run_id, folder=folder, spec=spec, needs_teacher=is_kd, info=info))
    return plan


def kind_estimate(kind, student, estimate_s, finished):
    """Seconds a run of ``kind`` (``TEACHER``, ``STUDENT`` alone, ``KD``) on ``student`` is expected to take: the
    mean wall time of the ``finished`` results of that kind and student, else ``estimate_s`` (benchmark.yaml
    ``ESTIMATE_S``)."""
    same = [r['wall_s'] for r in finished if r.get('kind') == kind and r.get('student') == student]
    if same:
        return sum(same) / len(same)
    value = estimate_s.get(kind, 0.0)
    return float(value.get(student, 0.0) if isinstance(value, dict) else value)


def estimate_wall(cells, with_teacher, estimate_s, finished, n_jobs):
    """Wall seconds of the runs ``cells`` (``(kind, student)`` pairs), plus the teacher if ``with_teacher``, on
    ``n_jobs`` slots (see :func:`simulate_wall`)."""
    teacher_s = kind_estimate('TEACHER', None, estimate_s, finished) if with_teacher else 0.0
    alone = [kind_estimate(k, s, estimate_s, finished) for k, s in cells if k != 'KD']
    kd = [kind_estimate(k, s, estimate_s, finished) for k, s in cells if k == 'KD']
    return simulate_wall(teacher_s, alone, kd, n_jobs)


def simulate_wall(teacher_s, alone_s, kd_s, n_jobs):
    """Wall seconds of greedy list scheduling on ``n_jobs`` slots: the teacher (``teacher_s``, 0 when cached) and
    the ``alone_s`` jobs start at once (teacher first), the ``kd_s`` jobs once the teacher is done."""
    slots = [0.0] * max(1, n_jobs)
    heapq.heapify(slots)
    teacher_end = 0.0
    if teacher_s > 0:
        teacher_end = heapq.heappop(slots) + teacher_s
        heapq.heappush(slots, teacher_end)
    queue = [(0.0, s) for s in alone_s] + [(teacher_end, s) for s in kd_s]
    end = teacher_end
    for ready, seconds in queue:
        start = max(heapq.heappop(slots), ready)
        heapq.heappush(slots, start + seconds)
        end = max(end, start + seconds)
    return end
