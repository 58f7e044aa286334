"""tools/demo.py --quick end to end (data creation, teacher, student, RDD when available, devkit table)."""
import json

import pytest

from rdd.engine import demo

pytestmark = pytest.mark.slow


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
