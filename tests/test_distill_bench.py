"""bench/kd_step.py runs end to end on the tiny KD config and writes the documented JSON."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_kd_step_bench_tiny(tmp_path):
    out = tmp_path / 'bench.json'
    res = subprocess.run([sys.executable, str(ROOT / 'bench' / 'kd_step.py'), '--cfg',
                          str(ROOT / 'tests' / 'configs' / 'tiny_kd.yaml'), '--repeats', '1', '--json', str(out)],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    for key in ('student', 'logit_kd', 'rdd'):
        assert data[key]['step_s'] > 0 and data[key]['peak_mb'] >= 0
    assert 0 < data['rdd']['rdd_loss_s'] < data['rdd']['step_s']
    assert 0 < data['rdd']['pairs_per_sample'] <= 200  # at most 100 teacher + 100 student peaks
    assert data['meta']['bev'] == [16, 16]


def test_kd_step_bench_teacher_share_tiny(tmp_path):
    """``--teacher-share``: plain vs frozen teacher side by side; the two teachers' maps agree to float rounding."""
    out = tmp_path / 'share.json'
    res = subprocess.run([sys.executable, str(ROOT / 'bench' / 'kd_step.py'), '--cfg',
                          str(ROOT / 'tests' / 'configs' / 'tiny_kd.yaml'), '--repeats', '1', '--threads', '1',
                          '--teacher-share', '--json', str(out)], capture_output=True, text=True, cwd=str(ROOT),
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    share = json.loads(out.read_text())['teacher_share']
    for key in ('teacher_plain', 'teacher_frozen', 'step_plain', 'step_frozen'):
        assert share[key]['step_s'] > 0 and share[key]['step_cpu_s'] > 0
    for key in ('share_plain', 'share_frozen'):
        assert 0 < share[key] < 1  # the teacher forward is a part of the step
    assert share['teacher_speedup'] > 0 and share['step_speedup'] > 0
    assert share['max_rel_diff'] <= 1e-5
