"""The KD benchmark ("mini Table 3", DESIGN.md §6): teacher once, then every row x student x seed, devkit mAP/NDS.

    python bench/kd_benchmark.py [--quick] [--out DIR] [--rows a,b] [--students S,XXS] [--seeds N] [--jobs 2]
                                 [--dry-run]

The protocol (data, teacher, students, rows, seeds) is ``configs/bench/benchmark.yaml``. The teacher is trained
once and cached by the hash of its config and the data (``--teacher_cache``); each cell is a ``tools/train.py``
+ ``tools/test.py`` run (``rdd.engine``) in its own 1-thread process, ``--jobs`` at a time. Finished cells are
never redone; a killed benchmark continues where it stopped. Writes into ``--out``: ``results.json`` (every
finished run: row, student, seed, mAP, NDS, per-class AP, wall and CPU seconds, config), ``results.md`` (mean ±
std per row and student), ``plots/map_nds.png``, ``plots/lambda_sweep.png`` and ``disparity/<student>.{png,json}``
(the paper's Fig. 2, ``tools/disparity.py``). Rows whose KD loss is not registered (or whose config the loss
rejects) are reported as unavailable. ``--dry-run`` prints the plan and the estimated wall time, runs nothing.
"""
import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.kdbench import report  # noqa: E402
from bench.kdbench.data import atomic_write_text, ensure_data, fingerprint, read_meta  # noqa: E402
from bench.kdbench.execute import Launcher, run_jobs  # noqa: E402
from bench.kdbench.plan import build_plan, estimate_wall  # noqa: E402
from bench.kdbench.protocol import PROTOCOL_FILE, REPO_ROOT, load_protocol, select  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='smoke run of the same code path (benchmark.yaml QUICK)')
    p.add_argument('--out', default=None, help='output folder (default output/kd_benchmark/{full,quick})')
    p.add_argument('--rows', default=None, help='comma-separated row keys (default: all; --quick: QUICK.ROWS)')
    p.add_argument('--students', default=None, help='comma-separated student keys (default: all)')
    p.add_argument('--seeds', type=int, default=None, help='seeds per row (default: the row\'s SEEDS)')
    p.add_argument('--jobs', type=int, default=2, help='runs in parallel, one compute thread each')
    p.add_argument('--workers', type=int, default=0, help='dataloader workers per run')
    p.add_argument('--data', default=None, help='data root (DATA_PATH) instead of benchmark.yaml DATA.ROOT')
    p.add_argument('--data_seed', type=int, default=None,
                   help='generator seed of the set instead of DATA.SEED (the protocol was tuned on seed 1; give '
                        'it with another --data root)')
    p.add_argument('--teacher_cache', default=None, help='teacher cache folder (default output/kd_benchmark/teachers)')
    p.add_argument('--protocol', default=str(PROTOCOL_FILE), help='the protocol YAML')
    p.add_argument('--no_disparity', action='store_true', help='skip the Fig. 2 disparity histograms')
    p.add_argument('--dry-run', '--dry_run', dest='dry_run', action='store_true',
                   help='print the plan and the estimated wall time; run nothing')
    return p.parse_args(argv)


def protocol_from_args(args):
    """``(protocol to run, protocol to report)``. The full run's report covers every row and student of the
    protocol (what other invocations into the same --out finished too); --quick reports what it runs."""
    full = load_protocol(args.protocol, quick=args.quick)
    if args.data:
        full = replace(full, data=replace(full.data, root=Path(args.data).resolve()))
    if args.data_seed is not None:
        full = replace(full, data=replace(full.data, seed=args.data_seed))
    rows = args.rows.split(',') if args.rows else (full.quick_rows if args.quick else None)
    students = args.students.split(',') if args.students else None
    seeds = args.seeds if args.seeds is not None else (full.quick_seeds if args.quick else None)
    run = select(full, rows=rows, students=students, seeds=seeds)
    return run, (run if args.quick else select(full, seeds=seeds))


def selected_jobs(plan, proto):
    """The jobs of ``plan`` that are cells of ``proto`` (row, student, seed)."""
    cells = {(r.student.key, r.row.key, r.seed) for r in proto.runs()}
    return [j for j in plan.jobs if (j.info['student'], j.info['row'], j.info['seed']) in cells]


class Progress:
    """tqdm over the runs of this invocation, one log line per finished (or failed) run, and the results files
    rewritten (atomically) after each."""

    def __init__(self, total, write_results):
        import tqdm
        self.bar = tqdm.tqdm(total=total, desc='kd-bench runs', dynamic_ncols=True)
        self.write_results, self.failed = write_results, {}

    def done(self, job, result):
        self.bar.update(1)
        self.bar.write(f"[kd-bench] {job.name}: mAP {result['mAP']:.4f} NDS {result['NDS']:.4f} "
                       f"({result['wall_s'] / 60:.1f} min wall, {result['cpu_s'] / 60:.1f} min CPU)")
        self.write_results(self.failed)

    def fail(self, job, why):
        self.bar.update(1)
        self.failed[job.name] = why
        self.bar.write(f'[kd-bench] {job.name}: FAILED: {why}')
        self.write_results(self.failed)


def collect(plan):
    """The teacher's result (or None) and the finished cells' results of ``plan``."""
    teacher = plan.teacher.load_result() if plan.teacher.finished() else None
    return teacher, [j.load_result() for j in plan.jobs if j.finished()]


def write_results(out, report_plan, proto, meta, failed, notes=()):
    """``results.json``, ``results.md`` and ``plots/`` from every finished run of the report's plan."""
    teacher, results = collect(report_plan)
    summary = report.summarize(results)
    meta = dict(meta, wall_s=time.time() - meta['started'])
    doc = {'meta': {k: v for k, v in meta.items() if k != 'started'}, 'teacher': teacher, 'runs': results,
           'summary': [{'student': s, 'row': r, **v} for (s, r), v in summary.items()],
           'unavailable': [{'student': s, 'row': r, 'why': w} for (s, r), w in sorted(report_plan.unavailable.items())],
           'failed': failed, 'notes': list(notes)}
    atomic_write_text(out / 'results.json', json.dumps(doc, indent=1))
    atomic_write_text(out / 'results.md', report.markdown(proto, summary, teacher, report_plan.unavailable, failed,
                                                          meta, notes))
    if results:
        (out / 'plots').mkdir(exist_ok=True)
        report.plot_bars(proto, summary, teacher, out / 'plots' / 'map_nds.png')
        report.plot_lambda_sweep(proto, summary, out / 'plots' / 'lambda_sweep.png')


def unavailable_by_row(unavailable):
    """``{row: (students, why)}``: one entry per row and reason (the students sharing it together)."""
    out = {}
    for (student, row), why in sorted(unavailable.items()):
        out.setdefault((row, why), []).append(student)
    return {row: (students, why) for (row, why), students in out.items()}


def print_plan(plan, proto, args):
    """The plan, row by row, and two wall-time estimates: the runs still to do now, and the whole table from
    scratch once every row's loss is registered."""
    teacher, finished = collect(plan)
    known = ([teacher] if teacher else []) + finished
    print(f'KD benchmark plan ({proto.source}{", quick" if proto.quick else ""}): {len(proto.students)} students, '
          f'{len(proto.rows)} rows, {len(proto.runs())} runs; data {proto.data.root}')
    print(f"  teacher: {'cached, mAP %.4f' % teacher['mAP'] if teacher else 'to train'} ({plan.teacher.folder})")
    missing = unavailable_by_row(plan.unavailable)
    for row in proto.rows:
        done = {s: sum(1 for j in plan.jobs if (j.info['student'], j.info['row']) == (s, row.key) and j.finished())
                for s in proto.students}
        line = ', '.join(f'{s} {done[s]}/{row.seeds}' for s in proto.students)
        if row.key in missing:
            line = f'UNAVAILABLE ({", ".join(missing[row.key][0])}): {missing[row.key][1]}'
        print(f'  {row.key:<16} {line}')
    todo = [(j.info['kind'], j.info['student']) for j in plan.jobs if not j.finished()]
    now = estimate_wall(todo, teacher is None, proto.estimate_s, known, args.jobs)
    every = [('KD' if r.row.kd_losses else 'STUDENT', r.student.key) for r in proto.runs()]
    whole = estimate_wall(every, True, proto.estimate_s, known, args.jobs)
    source = 'finished runs where there are some, else benchmark.yaml ESTIMATE_S (idle 2-core machine)'
    if proto.quick and not known:
        print('Estimated wall time: n/a for --quick before a run finished (ESTIMATE_S are full-protocol times)')
        return now
    print(f'Estimated wall time with --jobs {args.jobs}: {now / 60:.0f} min for the {len(todo)} available runs to '
          f'do{"" if teacher else " and the teacher"}; {whole / 3600:.1f} h for the whole table of {len(every)} runs '
          f'and the teacher from scratch, every row available (per-run times: {source})')
    return now


def run_disparity(plan, proto, out, teacher, log):
    """``disparity/<student>.{json,png}``: the teacher vs the seed-``DISPARITY.SEED`` students of the
    ``DISPARITY.ROWS`` rows that have finished. Returns notes (rows left out, a measurement that failed);
    a failure here never fails the benchmark."""
    from bench.kdbench.disparity_tool import measure, parse_args as disparity_args
    done = {(j.info['student'], j.info['row'], j.info['seed']): j for j in plan.jobs if j.finished()}
    notes = []
    for s in proto.students:
        members = [(r, done.get((s, r, proto.disparity_seed))) for r in proto.disparity_rows]
        present = [(r, j) for r, j in members if j is not None]
        missing = [r for r, j in members if j is None]
        if missing:
            notes.append(f'disparity {s}: rows {missing} have no finished seed-{proto.disparity_seed} run; left out')
        if not present:
            continue
        argv = ['--teacher_cfg', teacher['config'], '--teacher_ckpt', teacher['ckpt'],
                '--out', str(out / 'disparity' / s)]
        for r, j in present:
            result = j.load_result()
            argv += ['--student', proto.row(r).label, result['config'], result['ckpt']]
        stamp = out / 'disparity' / f'{s}.inputs.json'
        if stamp.is_file() and json.loads(stamp.read_text()) == argv and (out / 'disparity' / f'{s}.json').is_file():
            continue
        log(f'disparity {s}: teacher vs {[r for r, _ in present]} (tools/disparity.py)')
        try:
            measure(disparity_args(argv))
        except ValueError as exc:
            notes.append(f'disparity {s}: not measured: {exc}')
            continue
        atomic_write_text(stamp, json.dumps(argv))
    for note in notes:
        log(note)
    return notes


def main(argv=None):
    args = parse_args(argv)
    proto, report_proto = protocol_from_args(args)
    out = Path(args.out or REPO_ROOT / 'output' / 'kd_benchmark' / ('quick' if args.quick else 'full')).resolve()
    cache = Path(args.teacher_cache or REPO_ROOT / 'output' / 'kd_benchmark' / 'teachers').resolve()
    started = time.time()
    log = lambda msg: print(f'[kd-bench {time.time() - started:6.0f}s] {msg}', flush=True)
    if args.dry_run:
        fp = fingerprint(proto.data) if read_meta(proto.data) is not None else 'no-data'
        plan = build_plan(proto, out, cache, fp, args.workers)
        print_plan(plan, proto, args)
        return 0
    ensure_data(proto.data, log)
    fp = fingerprint(proto.data)
    report_plan = build_plan(report_proto, out, cache, fp, args.workers)
    plan = replace(report_plan, jobs=selected_jobs(report_plan, proto))
    for row, (students, why) in unavailable_by_row(report_plan.unavailable).items():
        log(f'row {row} unavailable ({", ".join(students)}): {why}')
    print_plan(plan, proto, args)
    meta = {'command': 'python bench/kd_benchmark.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
            'date': time.strftime('%Y-%m-%d %H:%M'), 'git': _git(), 'jobs': args.jobs, 'started': started,
            'data': f'{proto.data.root} ({fp}: {proto.data.scenes} scenes x {proto.data.samples_per_scene}, '
                    f'seed {proto.data.seed})'}
    todo = [j for j in plan.jobs if not j.finished()] + ([] if plan.teacher.finished() else [plan.teacher])
    progress = Progress(len(todo), lambda failed: write_results(out, report_plan, report_proto, meta, failed))
    try:
        teacher = run_jobs(plan.teacher, plan.jobs, args.jobs, Launcher(threads=1), progress.done, progress.fail)
    finally:
        progress.bar.close()
    notes = []
    if teacher is not None and not args.no_disparity:
        notes = run_disparity(plan, proto, out, teacher, log)
    write_results(out, report_plan, report_proto, meta, progress.failed, notes)
    log(f'wrote {out / "results.md"} and {out / "results.json"}')
    return 1 if progress.failed else 0


def _git():
    from rdd.engine.run_dir import git_sha
    return git_sha(REPO_ROOT)


if __name__ == '__main__':
    sys.exit(main())
