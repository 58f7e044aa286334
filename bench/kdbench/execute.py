"""Resumable, parallel execution of benchmark jobs (the teacher and the cells), each a ``run_one`` subprocess.

A job's folder holds ``spec.json`` (what to run), ``log.txt`` (its output), ``metrics.json`` (written by
``run_one`` when it succeeds) and ``result.json`` (metrics + wall and CPU seconds, written here, atomically):
``result.json`` marks the job finished, and a finished job is never run again. A killed job leaves no
``result.json``; the next invocation runs it again and ``tools/train.py``'s resume continues from its newest
checkpoint. Up to ``jobs`` subprocesses run at once, one compute thread each; a job that needs the teacher
starts only when the teacher is finished.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .data import atomic_write_text

RUN_ONE = Path(__file__).resolve().with_name('run_one.py')
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Job:
    """``name``: e.g. ``S/rdd/seed0``; ``folder``: the job's folder; ``spec``: run_one's spec (without
    ``out_dir``, which is ``folder``); ``needs_teacher``: start only after the teacher job; ``info``: copied
    into the result (row, student, seed, key, config)."""
    name: str
    folder: Path
    spec: dict
    needs_teacher: bool = False
    info: dict = field(default_factory=dict)

    @property
    def result_path(self):
        return self.folder / 'result.json'

    def finished(self):
        return self.result_path.is_file()

    def load_result(self):
        return json.loads(self.result_path.read_text())


class JobFailed(RuntimeError):
    pass


class Launcher:
    """Starts ``run_one`` subprocesses and keeps track of them so that they can all be stopped."""

    def __init__(self, threads=1):
        self.threads, self._live, self._lock = threads, set(), threading.Lock()

    def environment(self):
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   PYTHONPATH=os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get('PYTHONPATH')] if p]))
        return env

    def run(self, job, teacher_ckpt=None):
        """Run ``job`` to completion; returns its result dict (also written to ``result.json``)."""
        job.folder.mkdir(parents=True, exist_ok=True)
        spec = dict(job.spec, out_dir=str(job.folder), threads=self.threads)
        if job.needs_teacher:
            spec['teacher_ckpt'] = str(teacher_ckpt)
        atomic_write_text(job.folder / 'spec.json', json.dumps(spec, indent=2))
        (job.folder / 'metrics.json').unlink(missing_ok=True)
        tic = time.time()
        with open(job.folder / 'log.txt', 'a') as log:
            log.write(f'\n==== {time.strftime("%Y-%m-%d %H:%M:%S")} {job.name}\n')
            log.flush()
            proc = subprocess.Popen([sys.executable, str(RUN_ONE), str(job.folder / 'spec.json')], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=self.environment(),
                                    preexec_fn=_die_with_parent if sys.platform.startswith('linux') else None)
            with self._lock:
                self._live.add(proc)
            try:
                _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time, its reaped workers included
                proc.returncode = os.waitstatus_to_exitcode(status)
            finally:
                with self._lock:
                    self._live.discard(proc)
        wall = time.time() - tic
        metrics = job.folder / 'metrics.json'
        if proc.returncode != 0 or not metrics.is_file():
            raise JobFailed(f'{job.name} failed (exit code {proc.returncode}); log: {job.folder / "log.txt"}\n'
                            + tail(job.folder / 'log.txt'))
        result = dict(job.info, **json.loads(metrics.read_text()), wall_s=round(wall, 1),
                      cpu_s=round(usage.ru_utime + usage.ru_stime, 1), epochs=spec['epochs'],
                      threads=self.threads, finished=time.strftime('%Y-%m-%dT%H:%M:%S'))
        atomic_write_text(job.result_path, json.dumps(result, indent=2))
        return result

    def stop_all(self):
        with self._lock:
            live = list(self._live)
        for proc in live:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)


def _die_with_parent():
    """In the child before exec: ask Linux to SIGTERM it when the benchmark dies (even by SIGKILL), so that a
    restarted benchmark never finds an orphan still training in a cell's folder. No-op elsewhere."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def tail(path, lines=15):
    try:
        return '\n'.join(Path(path).read_text(errors='replace').replace('\r', '\n').splitlines()[-lines:])
    except OSError:
        return ''


def run_jobs(teacher_job, jobs, n_jobs, launcher, on_done, on_fail):
    """Run the unfinished ``jobs`` (and ``teacher_job`` first when it is not finished), ``n_jobs`` at a time.

    ``on_done(job, result)`` / ``on_fail(job, error)`` are called in this thread as jobs end. Jobs needing the
    teacher are skipped (``on_fail``) when the teacher fails. Returns the teacher's result (None if it failed).
    """
    teacher = teacher_job.load_result() if teacher_job.finished() else None
    pending_kd = [j for j in jobs if j.needs_teacher and not j.finished()]
    ready = [j for j in jobs if not j.needs_teacher and not j.finished()]
    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        futures = {}
        if teacher is None:
            futures[pool.submit(launcher.run, teacher_job)] = teacher_job
        else:
            ready += pending_kd
            pending_kd = []
        ckpt = teacher['ckpt'] if teacher else None
        for job in ready:
            futures[pool.submit(launcher.run, job, ckpt)] = job
        try:
            while futures:
                done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for fut in done:
                    job = futures.pop(fut)
                    try:
                        result = fut.result()
                    except JobFailed as exc:
                        on_fail(job, str(exc))
                        if job is teacher_job:
                            for kd in pending_kd:
                                on_fail(kd, 'not run: the teacher failed')
                            pending_kd = []
                        continue
                    on_done(job, result)
                    if job is teacher_job:
                        teacher = result
                        for kd in pending_kd:
                            futures[pool.submit(launcher.run, kd, result['ckpt'])] = kd
                        pending_kd = []
        except BaseException:
            for fut in futures:
                fut.cancel()
            launcher.stop_all()
            raise
    return teacher
