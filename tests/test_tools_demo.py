"""tools/demo.py --quick end to end (data creation, teacher, student, RDD when available, devkit table)."""
import json

import pytest

from rdd.engine import demo


@pytest.mark.slow
def test_demo_quick_writes_table(tmp_path):
    summary = demo.main(['--quick', '--out', str(tmp_path / 'out'), '--data_path', str(tmp_path / 'data')])
    saved = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert saved['table'] == summary['table']
    labels = [r['model'] for r in saved['rows']]
    assert labels[:3] == ['teacher, untrained', 'teacher CP-Voxel (demo)', 'student CP-Voxel-S alone']
    assert len(labels) == 4 or any('RDD row skipped' in n for n in saved['notes'])
    for row in saved['rows']:
        assert 0.0 <= row['mAP'] <= 1.0 and 0.0 <= row['NDS'] <= 1.0 and row['latency_ms'] > 0
    teacher, student = saved['rows'][1], saved['rows'][2]
    assert student['params'] < teacher['params'] and student['macs'] < teacher['macs']
    assert 'mAP' in saved['table'] and 'GMACs' in saved['table']
    assert saved['seeds'] == 1 and '1 training seed per row' in saved['table']


def test_demo_table_says_how_many_seeds_it_shows():
    row = {'model': 'student', 'mAP': 0.25, 'NDS': None, 'params': 2e6, 'macs': 3e9, 'latency_ms': 12.0}
    lines = demo.format_table([row]).splitlines()
    assert lines[2].split() == ['student', '0.2500', 'n/a', '2.000', '3.00', '12.0']
    assert lines[3].startswith('1 training seed per row') and 'bench/kd_benchmark.py' in lines[3]
    assert demo.format_table([row], seeds=3).splitlines()[-1] == '3 training seeds per row'


@pytest.mark.parametrize('quick', [False, True])
def test_rdd_demo_config_matches_what_the_demo_runs(quick):
    """The demo runs configs/demo/rdd_cp_voxel_s.yaml as it is: it must train on the student's schedule and data,
    from the teacher the demo trains, so that running it by hand reproduces the demo's RDD row."""
    from rdd.config import ROOT_DIR as REPO_ROOT
    from rdd.engine.cli import load_config
    plan = demo.PLANS['quick' if quick else 'full']
    assert demo.schedule(demo.CONFIGS['rdd'], plan) == demo.schedule(demo.CONFIGS['student'], plan)
    rdd = load_config(str(REPO_ROOT / demo.CONFIGS['rdd']))
    student = load_config(str(REPO_ROOT / demo.CONFIGS['student']))
    teacher = load_config(str(REPO_ROOT / demo.CONFIGS['teacher']))
    assert dict(rdd.OPTIMIZATION) == dict(student.OPTIMIZATION)
    assert rdd.DATA_CONFIG == student.DATA_CONFIG
    teacher_epochs = int(plan['epochs'] or teacher.OPTIMIZATION.NUM_EPOCHS)
    if not quick:  # the config's default teacher is where the full demo (default --out) writes its teacher
        expected = (REPO_ROOT / 'output' / 'demo_results' / 'runs' / teacher.EXP_GROUP_PATH / teacher.TAG / 'demo'
                    / 'ckpt' / f'checkpoint_epoch_{teacher_epochs}.pth')
        assert rdd.MODEL.TEACHER_CKPT == str(expected)
