"""bench/kd_benchmark.py: protocol file, plan, resumption, report arithmetic, and the --quick smoke run."""
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import kd_benchmark  # noqa: E402
from bench.kdbench import report  # noqa: E402
from bench.kdbench.execute import Job, JobFailed, run_jobs  # noqa: E402
from bench.kdbench.plan import Plan, build_plan, simulate_wall  # noqa: E402
from bench.kdbench.protocol import PROTOCOL_FILE, ProtocolError, load_protocol, select  # noqa: E402


# ---------------------------------------------------------------- protocol
def test_protocol_rows_and_seeds_as_the_issue_asks():
    proto = load_protocol()
    keys = [r.key for r in proto.rows]
    assert keys[0] == 'student' and len(set(keys)) == len(keys)
    for key in ('student', 'pp_logit_kd', 'rdd'):
        assert proto.row(key).seeds >= 3
    assert all(r.seeds >= 2 for r in proto.rows)
    names = {n for r in proto.rows for n in r.loss_names}
    assert {'LogitKDLoss', 'FitNetLoss', 'FGLoss', 'GIDFeatureLoss', 'GIDLogitLoss', 'LADLoss', 'RDDLoss'} <= names
    assert sorted(r.sweep_lambda for r in proto.rows if r.sweep_lambda is not None) == [0.0, 0.05, 0.1, 0.3]
    assert set(proto.students) == {'S', 'XXS'}
    # seed-major order: every row's seed 0 comes before any seed 1
    runs = proto.runs()
    first_seed1 = next(i for i, r in enumerate(runs) if r.seed == 1)
    assert all(r.seed == 0 for r in runs[:first_seed1]) and len(runs[:first_seed1]) == 2 * len(proto.rows)
    assert len(runs) == 2 * sum(r.seeds for r in proto.rows)


def _write_protocol(tmp_path, mutate):
    raw = yaml.safe_load(PROTOCOL_FILE.read_text())
    for key in ('TEACHER',):
        raw[key] = str(PROTOCOL_FILE.parent / raw[key])
    for s in raw['STUDENTS'].values():
        s['CONFIG'], s['KD_CONFIG'] = (str(PROTOCOL_FILE.parent / s[k]) for k in ('CONFIG', 'KD_CONFIG'))
    mutate(raw)
    path = tmp_path / 'benchmark.yaml'
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


@pytest.mark.parametrize('mutate, message', [
    (lambda raw: raw['ROWS'][1].update(SEED=3), "ROWS[1]: unknown key(s) ['SEED']"),
    (lambda raw: raw['ROWS'][2].update(KEY='student'), 'duplicate KEY'),
    (lambda raw: raw['ROWS'][1].update(KD_LOSSES=[{'WEIGHT': 1.0}]), 'ROWS[1].KD_LOSSES'),
    (lambda raw: raw['ROWS'][0].update(SEEDS=0), 'ROWS[0].SEEDS: at least 1'),
    (lambda raw: raw['STUDENTS']['S'].update(CONFIG='nope.yaml'), 'STUDENTS.S.CONFIG: config nope.yaml not found'),
    (lambda raw: raw['DATA'].pop('SCENES'), 'DATA: missing key SCENES'),
    (lambda raw: raw['DISPARITY'].update(ROWS=['student', 'nope']), "no row 'nope'"),
])
def test_protocol_errors_name_file_and_key(tmp_path, mutate, message):
    path = _write_protocol(tmp_path, mutate)
    with pytest.raises(ProtocolError, match='benchmark.yaml') as err:
        load_protocol(path)
    assert message in str(err.value)


def test_selection_and_quick_plan():
    proto = load_protocol(quick=True)
    assert proto.quick and proto.teacher_epochs == 1 and proto.student_epochs == 1
    assert proto.data.root.name == 'kd_bench_quick' and proto.data.seed == load_protocol().data.seed
    sel = select(proto, rows=['rdd', 'student'], students=['XXS'], seeds=2)
    assert [r.key for r in sel.rows] == ['student', 'rdd']  # the table's order
    assert [run.run_id for run in sel.runs()] == ['XXS/student/seed0', 'XXS/rdd/seed0', 'XXS/student/seed1',
                                                  'XXS/rdd/seed1']
    with pytest.raises(ProtocolError, match="no row 'nope'"):
        select(proto, rows=['nope'])
    with pytest.raises(ProtocolError, match=r"no student\(s\) \['M'\]"):
        select(proto, students=['M'])


def test_bench_kd_configs_train_like_their_student():
    """A distilled row differs from the student alone only by its KD losses: same data, schedule, student."""
    from rdd.engine.cli import load_config
    proto = load_protocol()
    teacher = load_config(str(proto.teacher))
    for student in proto.students.values():
        alone, kd = load_config(str(student.config)), load_config(str(student.kd_config))
        assert dict(kd.OPTIMIZATION) == dict(alone.OPTIMIZATION)
        assert kd.DATA_CONFIG == alone.DATA_CONFIG == teacher.DATA_CONFIG
        assert kd.MODEL.STUDENT.MODEL == alone.MODEL and kd.MODEL.TEACHER.MODEL == teacher.MODEL
        assert alone.OPTIMIZATION.NUM_EPOCHS < teacher.OPTIMIZATION.NUM_EPOCHS


def test_bench_student_widths_keep_the_paper_ratios():
    """S = {3D 1, BEV .5, head .5} and XXS = {.5, .25, .25} of the teacher (DESIGN.md §3), by channel counts."""
    from rdd.config import cfg_from_yaml_file
    from rdd.models import build_model
    proto = load_protocol()

    def widths(path):
        model = build_model(cfg_from_yaml_file(str(path)))
        return (model.backbone_3d.conv_out[0].weight.shape[0], model.backbone_2d.num_bev_features,
                model.dense_head.shared_conv[0].weight.shape[0])
    t = widths(proto.teacher)
    for key, ratios in (('S', (1, 0.5, 0.5)), ('XXS', (0.5, 0.25, 0.25))):
        s = widths(proto.students[key].config)
        assert tuple(a / b for a, b in zip(s, t)) == ratios, (key, s, t)


# ---------------------------------------------------------------- scheduling and resumption
class FakeLauncher:
    """Records the jobs it runs and writes their result.json as the real launcher does."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def run(self, job, teacher_ckpt=None):
        self.calls.append((job.name, teacher_ckpt))
        if job.name in self.fail:
            raise JobFailed(f'{job.name} failed')
        result = dict(job.info, mAP=0.5, NDS=0.5, wall_s=1.0, cpu_s=1.0, ckpt=f'/ckpt/{job.name}.pth')
        job.folder.mkdir(parents=True, exist_ok=True)
        job.result_path.write_text(json.dumps(result))
        return result

    def stop_all(self):
        pass


def _job(tmp_path, name, kd, done=False):
    student, row, seed = name.split('/') if '/' in name else (None, name, 'seed0')
    job = Job(name=name, folder=tmp_path / name, spec={'epochs': 1}, needs_teacher=kd,
              info={'row': row, 'student': student, 'seed': int(seed[4:]), 'kind': 'KD' if kd else 'STUDENT'})
    if done:
        job.folder.mkdir(parents=True)
        job.result_path.write_text(json.dumps(dict(job.info, mAP=0.1, NDS=0.2, wall_s=3.0, cpu_s=1.5, ckpt='/t.pth')))
    return job


def test_finished_cells_are_skipped_and_kd_waits_for_the_teacher(tmp_path):
    teacher = _job(tmp_path, 'teacher', kd=False, done=True)
    jobs = [_job(tmp_path, 'S/student/seed0', kd=False, done=True), _job(tmp_path, 'S/student/seed1', kd=False),
            _job(tmp_path, 'S/rdd/seed0', kd=True, done=True), _job(tmp_path, 'S/rdd/seed1', kd=True)]
    launcher, done = FakeLauncher(), []
    result = run_jobs(teacher, jobs, 2, launcher, lambda j, r: done.append(j.name), None)
    assert result['ckpt'] == '/t.pth'  # the cached teacher, not retrained
    assert sorted(launcher.calls) == [('S/rdd/seed1', '/t.pth'), ('S/student/seed1', '/t.pth')]
    assert sorted(done) == ['S/rdd/seed1', 'S/student/seed1']
    launcher2 = FakeLauncher()  # a second invocation: everything is finished, nothing runs
    run_jobs(teacher, jobs, 2, launcher2, None, None)
    assert launcher2.calls == []


def test_teacher_first_and_its_failure_skips_the_kd_cells(tmp_path):
    teacher = _job(tmp_path, 'teacher', kd=False)
    jobs = [_job(tmp_path, 'S/student/seed0', kd=False), _job(tmp_path, 'S/rdd/seed0', kd=True)]
    launcher = FakeLauncher()
    run_jobs(teacher, jobs, 1, launcher, lambda j, r: None, None)
    assert launcher.calls == [('teacher', None), ('S/student/seed0', None), ('S/rdd/seed0', '/ckpt/teacher.pth')]

    teacher, jobs = _job(tmp_path / 'b', 'teacher', kd=False), [_job(tmp_path / 'b', 'S/rdd/seed0', kd=True)]
    failed = {}
    assert run_jobs(teacher, jobs, 2, FakeLauncher(fail={'teacher'}), None,
                    lambda j, why: failed.update({j.name: why})) is None
    assert failed == {'teacher': 'teacher failed', 'S/rdd/seed0': 'not run: the teacher failed'}
    assert not jobs[0].finished()


def test_a_cell_continued_from_another_checkout_resumes_from_its_checkpoint(tmp_path):
    """The run folder under a job's folder depends on where its config lies relative to the checkout
    (exp_group_and_tag); a teacher cache inside checkout A but outside checkout B gives two folders. B must
    resume from A's checkpoint, not train from scratch."""
    import os
    from bench.kdbench.run_one import ckpt_dir, moved_checkpoint
    folder = tmp_path / 'teacher-abc'
    spec = {'cfg': str(folder / 'teacher.yaml'), 'out_dir': str(folder)}
    # the config lies outside this checkout: its folder's name is the experiment group
    assert Path(ckpt_dir(spec)) == folder / 'teacher-abc' / 'teacher' / 'bench' / 'ckpt'
    assert moved_checkpoint(spec) is None  # nothing trained anywhere yet
    other = folder / 'kd_benchmark' / 'teachers' / 'teacher-abc' / 'teacher' / 'bench' / 'ckpt'  # checkout A
    other.mkdir(parents=True)
    old, new = other / 'checkpoint_epoch_3.pth', other / 'checkpoint_epoch_4.pth'
    for i, path in enumerate((new, old)):  # epoch 4 written last: newest by modification time
        path.write_bytes(b'x')
        os.utime(path, (1000 - 500 * i, 1000 - 500 * i))
    (other / '.tmp_checkpoint_epoch_5.pth').write_bytes(b'x')  # an interrupted save is never a candidate
    assert moved_checkpoint(spec) == str(new)
    own = Path(ckpt_dir(spec))
    own.mkdir(parents=True)
    assert moved_checkpoint(spec) == str(new)  # an empty own folder changes nothing
    (own / 'checkpoint_epoch_1.pth').write_bytes(b'x')
    assert moved_checkpoint(spec) is None  # this checkout's own checkpoints win (tools/train.py resumes them)


def test_run_one_passes_the_moved_checkpoint_and_keeps_a_finished_one(tmp_path, monkeypatch):
    from types import SimpleNamespace
    import rdd.engine.train_pipeline as train_pipeline
    from bench.kdbench import run_one
    folder = tmp_path / 'teacher-abc'
    spec = {'cfg': str(folder / 'teacher.yaml'), 'out_dir': str(folder), 'workers': 0, 'epochs': 4, 'seed': 666}
    other = folder / 'elsewhere' / 'ckpt'
    other.mkdir(parents=True)
    (other / 'checkpoint_epoch_4.pth').write_bytes(b'x')  # trained to the end by another checkout
    seen = []

    def fake_train(argv):  # resuming at the last epoch trains nothing and writes no checkpoint here
        seen.append(argv)
        return SimpleNamespace(hook=lambda kind: SimpleNamespace(ckpt_dir=run_one.ckpt_dir(spec)))
    monkeypatch.setattr(train_pipeline, 'main', fake_train)
    assert run_one.train(spec) == other / 'checkpoint_epoch_4.pth'
    assert seen[0][seen[0].index('--ckpt') + 1] == str(other / 'checkpoint_epoch_4.pth')
    (other / 'checkpoint_epoch_4.pth').rename(other / 'checkpoint_epoch_3.pth')  # interrupted at epoch 3
    with pytest.raises(FileNotFoundError, match='training finished without'):
        run_one.train(spec)  # the fake trained nothing: epoch 4 is missing, not silently taken from epoch 3


def test_kd_terms_means_over_iterations_then_seeds(tmp_path):
    """bench/kd_terms.py: per run the mean over iterations (a step logged twice by a resumed run counts once,
    its last value), per row the mean over seeds; the disparity minimum over every iteration of every seed."""
    from torch.utils.tensorboard import SummaryWriter
    from bench import kd_terms

    def run(seed, *logs):
        folder = tmp_path / 'runs' / 'S' / 'rdd' / f'seed{seed}-k'
        for i, scalars in enumerate(logs):  # one event file per (resumed) training session
            with SummaryWriter(str(folder / 'S' / 'rdd' / 'bench' / 'tensorboard' / f'session{i}')) as w:
                for tag, values in scalars.items():
                    for step, v in values:
                        w.add_scalar('train/' + tag, v, step)
        (folder / 'result.json').write_text(json.dumps({'student': 'S', 'row': 'rdd', 'seed': seed}))

    disp = 'kd/RDDLoss/rdd_disp_mean'
    run(0, {'loss_det': [(0, 10.0), (1, 99.0)], 'loss_kd': [(0, 1.0), (1, 3.0)], disp: [(0, 0.9), (1, 0.7)]},
        {'loss_det': [(1, 20.0)]})  # resumed: step 1 logged again, 20 replaces 99
    run(1, {'loss_det': [(0, 30.0)], 'loss_kd': [(0, 6.0)], disp: [(0, 0.5)]})
    (tmp_path / 'runs' / 'S' / 'rdd' / 'seed2-k').mkdir()  # unfinished (no result.json): not counted
    rows = kd_terms.summarize(tmp_path)
    assert len(rows) == 1 and rows[0]['seeds'] == 2
    r = rows[0]
    assert r['loss_det'] == pytest.approx((15.0 + 30.0) / 2)         # (10 + 20) / 2 and 30
    assert r['loss_kd'] == pytest.approx((2.0 + 6.0) / 2)
    assert r['kd_over_det'] == pytest.approx((2 / 15 + 6 / 30) / 2)
    assert r['rdd_disp_mean'] == pytest.approx((0.8 + 0.5) / 2)
    assert r['rdd_disp_mean_min'] == pytest.approx(0.5)
    assert '| S | rdd | 2 | 22.5 | 4 |' in kd_terms.table(rows)
    with pytest.raises(SystemExit, match='no runs/ folder'):
        kd_terms.main(['--out', str(tmp_path / 'nowhere')])


def test_kd_compare_matches_cells_by_key(tmp_path):
    from bench import kd_compare

    def results(path, runs):
        path.write_text(json.dumps({'runs': [dict(zip(('key', 'student', 'row', 'seed', 'mAP'), r)) for r in runs]}))
        return path
    old = results(tmp_path / 'old.json', [('a', 'S', 'student', 0, 0.10), ('b', 'S', 'rdd', 0, 0.20),
                                          ('c', 'S', 'rdd', 1, 0.30), ('gone', 'S', 'rdd', 2, 0.5)])
    new = results(tmp_path / 'new.json', [('a', 'S', 'student', 0, 0.10), ('b', 'S', 'rdd', 0, 0.25),
                                          ('c', 'S', 'rdd', 1, 0.29), ('new', 'XXS', 'rdd', 0, 0.4)])
    out = kd_compare.main([str(old), str(new), '--json', str(tmp_path / 'cmp.json')])
    assert (out['pairs'], out['identical'], out['changed']) == (3, 1, 2)  # 'gone' and 'new' have no partner
    assert out['median_abs_dmap'] == pytest.approx((0.05 + 0.01) / 2) and out['max_abs_dmap'] == pytest.approx(0.05)
    assert [(c['row'], c['pairs'], c['identical']) for c in out['cells']] == [('rdd', 2, 0), ('student', 1, 1)]
    assert json.loads((tmp_path / 'cmp.json').read_text())['pairs'] == 3
    with pytest.raises(SystemExit, match='not a bench/kd_benchmark.py results.json'):
        kd_compare.main([str(tmp_path / 'missing.json'), str(new)])


def test_wall_time_simulation_by_hand():
    # 2 slots: teacher 0-10 | alone 0-4, 4-8, 8-12; KD ready at 10: 10-15 (slot 1), 12-17 (slot 2) -> 17
    assert simulate_wall(10, [4, 4, 4], [5, 5], 2) == 17
    # cached teacher: 0-4 | 0-4, then 4-8 | 4-9 (KD), then 8-13 (KD) -> 13
    assert simulate_wall(0, [4, 4, 4], [5, 5], 2) == 13
    assert simulate_wall(0, [], [], 2) == 0


# ---------------------------------------------------------------- report arithmetic
HAND_MADE = {  # (row, seed): (mAP, NDS), student S
    ('student', 0): (0.10, 0.20), ('student', 1): (0.20, 0.30), ('student', 2): (0.30, 0.40),
    ('pp_logit_kd', 0): (0.50, 0.30), ('pp_logit_kd', 1): (0.52, 0.30), ('pp_logit_kd', 2): (0.54, 0.30),
    ('hint', 0): (0.25, 0.35),
    ('rdd', 0): (0.30, 0.40), ('rdd', 1): (0.40, 0.40),
}


def test_mean_std_and_table_from_a_hand_made_results_file(tmp_path):
    proto = select(load_protocol(), rows=['student', 'pp_logit_kd', 'hint', 'rdd'], students=['S'])
    teacher = _job(tmp_path, 'teacher', kd=False, done=True)
    jobs = []
    for (row, seed), (m, n) in HAND_MADE.items():
        job = _job(tmp_path, f'S/{row}/seed{seed}', kd=row != 'student')
        job.folder.mkdir(parents=True)
        job.result_path.write_text(json.dumps(dict(job.info, mAP=m, NDS=n, wall_s=60.0, cpu_s=30.0)))
        jobs.append(job)
    plan = Plan(teacher=teacher, jobs=jobs, unavailable={('S', 'fg'): 'KD loss FGLoss is not registered'})
    meta = {'command': 'x', 'date': 'd', 'git': 'g', 'jobs': 2, 'data': 'synthetic', 'started': 0.0}
    kd_benchmark.write_results(tmp_path / 'out', plan, proto, meta, {'S/lad/seed0': 'boom'})
    doc = json.loads((tmp_path / 'out' / 'results.json').read_text())
    summary = {(c['student'], c['row']): c for c in doc['summary']}
    # student alone: mean(0.1, 0.2, 0.3) = 0.2; sample std = sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    assert summary[('S', 'student')]['mAP'] == pytest.approx([0.2, 0.1])
    assert summary[('S', 'student')]['NDS'] == pytest.approx([0.3, 0.1])
    # rdd: mean 0.35, std sqrt((0.05² + 0.05²) / 1) = 0.0707107; NDS 0.4 ± 0
    assert summary[('S', 'rdd')]['mAP'] == pytest.approx([0.35, 0.0707107], abs=1e-7)
    assert summary[('S', 'rdd')]['NDS'] == pytest.approx([0.4, 0.0], abs=1e-12)
    assert summary[('S', 'hint')]['mAP'] == pytest.approx([0.25, None]) and summary[('S', 'hint')]['n'] == 1
    assert len(doc['runs']) == 9 and doc['failed'] == {'S/lad/seed0': 'boom'}
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert '| teacher | | 1 | 0.1000 | 0.2000 | | | 0.1, 0.0 |' in md
    assert '| student alone | Table 3 (no KD) | 3 | 0.2000 ± 0.1000 | 0.3000 ± 0.1000 |  |  | 1.0, 0.5 |' in md
    # rdd vs alone: Δ = +0.15; pooled std = sqrt((2 * 0.01 + 1 * 0.005) / 3) = 0.0913 -> 2x = 0.183: no flag.
    # NDS: Δ = +0.10, pooled = sqrt((2 * 0.01 + 0) / 3) = 0.0816 -> 2x = 0.163: no flag
    assert '| 2 / 3 | 0.3500 ± 0.0707 | 0.4000 ± 0.0000 | +0.1500 | +0.1000 |' in md
    # PP logit KD: 0.52 ± 0.02; pooled = sqrt((2 * 0.01 + 2 * 0.0004) / 4) = 0.0721 -> 2x = 0.144 < 0.32: flagged
    assert '| 3 | 0.5200 ± 0.0200 | 0.3000 ± 0.0000 | +0.3200* | +0.0000 |' in md
    assert '| Hint (FitNet) | Table 1 | 1 / 2 | 0.2500 | 0.3500 | +0.0500 | +0.0500 |' in md
    assert 'fg (S): KD loss FGLoss is not registered' in md and 'S/lad/seed0: boom' in md
    assert (tmp_path / 'out' / 'plots' / 'map_nds.png').stat().st_size > 0


def test_pooled_std_and_mean_std_edge_cases():
    assert report.mean_std([]) == (None, None) and report.mean_std([0.3]) == (0.3, None)
    assert report.pooled_std(0.1, 3, None, 1) is None
    # sqrt((1 * 0.04 + 1 * 0.01) / 2) = sqrt(0.025)
    assert report.pooled_std(0.2, 2, 0.1, 2) == pytest.approx(0.158113883)


# ---------------------------------------------------------------- availability
def test_unregistered_and_rejected_rows_are_unavailable_not_crashes(tmp_path):
    def mutate(raw):
        raw['ROWS'] = [raw['ROWS'][0],
                       {'KEY': 'ghost', 'LABEL': 'ghost', 'SEEDS': 2, 'KD_LOSSES': [{'NAME': 'NoSuchLoss'}]},
                       {'KEY': 'bad_key', 'LABEL': 'bad', 'SEEDS': 2,
                        'KD_LOSSES': [{'NAME': 'FitNetLoss', 'WEIGHT': 1.0, 'NO_SUCH_KEY': 1}]},
                       {'KEY': 'fitnet', 'LABEL': 'fitnet', 'SEEDS': 1,
                        'KD_LOSSES': [{'NAME': 'FitNetLoss', 'WEIGHT': 1.0}]}]
        raw['DISPARITY']['ROWS'] = ['student']
    proto = select(load_protocol(_write_protocol(tmp_path, mutate)), students=['XXS'])
    plan = build_plan(proto, tmp_path / 'out', tmp_path / 'cache', 'fp0')
    assert plan.unavailable[('XXS', 'ghost')] == 'KD loss NoSuchLoss is not registered'
    assert 'NO_SUCH_KEY' in plan.unavailable[('XXS', 'bad_key')]
    assert [j.name for j in plan.jobs] == ['XXS/student/seed0', 'XXS/fitnet/seed0', 'XXS/student/seed1',
                                           'XXS/student/seed2']
    kd = plan.jobs[1]
    assert kd.needs_teacher and not plan.jobs[0].needs_teacher
    cfg = yaml.safe_load(Path(kd.spec['cfg']).read_text())
    assert cfg['MODEL']['KD_LOSSES'] == [{'NAME': 'FitNetLoss', 'WEIGHT': 1.0}]
    assert cfg['MODEL']['TEACHER_CKPT'].startswith(str(plan.teacher.folder))
    # the same plan again gives the same keys; another data fingerprint gives new ones
    again = build_plan(proto, tmp_path / 'out', tmp_path / 'cache', 'fp0')
    other = build_plan(proto, tmp_path / 'out', tmp_path / 'cache', 'fp1')
    assert [j.folder for j in again.jobs] == [j.folder for j in plan.jobs]
    assert not {j.folder for j in other.jobs} & {j.folder for j in plan.jobs}
    assert other.teacher.folder != plan.teacher.folder


# ---------------------------------------------------------------- the smoke run
@pytest.mark.slow
def test_quick_benchmark_end_to_end_and_resume(tmp_path, monkeypatch):
    args = ['--quick', '--out', str(tmp_path / 'out'), '--teacher_cache', str(tmp_path / 'teachers'),
            '--data', str(tmp_path / 'data'), '--jobs', '2']
    assert kd_benchmark.main(args) == 0
    doc = json.loads((tmp_path / 'out' / 'results.json').read_text())
    proto = load_protocol(quick=True)
    cells = {(r['student'], r['row']) for r in doc['runs']}
    assert cells == {(s, r) for s in proto.students for r in proto.quick_rows}
    for run in doc['runs']:
        assert 0.0 <= run['mAP'] <= 1.0 and 0.0 <= run['NDS'] <= 1.0 and run['wall_s'] > 0 and run['cpu_s'] > 0
        assert set(run['AP']) == set(load_config_classes()) and Path(run['config']).is_file()
    assert doc['teacher']['epochs'] == 1
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert 'student alone' in md and 'RDD (paper' in md
    assert (tmp_path / 'out' / 'plots' / 'map_nds.png').is_file()
    for s in proto.students:
        assert (tmp_path / 'out' / 'disparity' / f'{s}.png').is_file() or any(
            f'disparity {s}' in n for n in doc['notes'])

    # killed after training, before its result was written: only that cell runs again (training resumes at
    # its last checkpoint: nothing left to train; it is evaluated)
    victim = next(p for p in (tmp_path / 'out' / 'runs').rglob('result.json') if '/rdd/' in str(p))
    victim.unlink()
    ran = []
    original = kd_benchmark.Launcher.run
    monkeypatch.setattr(kd_benchmark.Launcher, 'run',
                        lambda self, job, ckpt=None: ran.append(job.name) or original(self, job, ckpt))
    assert kd_benchmark.main(args) == 0
    assert len(ran) == 1 and '/rdd/' in ran[0] and victim.is_file()


def load_config_classes():
    from rdd.engine.cli import load_config
    return list(load_config(str(load_protocol().teacher)).CLASS_NAMES)
