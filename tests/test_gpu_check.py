"""bench/gpu_check.py: the CPU smoke run covers its code path; without CUDA the default run exits 0 at once."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_check', REPO / 'bench' / 'gpu_check.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_smoke_run_covers_the_code_path(tmp_path):
    out = tmp_path / 'gpu_check.json'
    threads = torch.get_num_threads()
    try:  # one thread: the tiny models' many small matmuls gain nothing from more on a busy machine
        rc = _gpu_check().main(['--device', 'cpu', '--iters', '2', '--batch_size', '1', '--sweeps', '1',
                                '--kd_cfg', str(REPO / 'tests' / 'configs' / 'tiny_kd.yaml'), '--teacher_cfg', '',
                                '--threads', '1', '--json', str(out)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res['steps']) == {'student', 'logit_kd', 'rdd'}  # no AMP variants on CPU
    for name, step in res['steps'].items():
        assert 'error' not in step, (name, step)
        assert step['median_step_s'] > 0 and step['all_finite']
    assert res['cpu_vs_device_loss']['ok'] and res['cpu_vs_device_loss']['rel_diff'] == 0.0
    assert res['distributed'] == {'backend': 'gloo', 'world_size': 1, 'all_reduce_ok': True}
    assert res['cuda_tests'] == {'skipped': 'needs CUDA'}


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the behaviour without CUDA')
def test_without_cuda_it_says_so_and_exits_0(capsys, tmp_path):
    assert _gpu_check().main(['--json', str(tmp_path / 'g.json')]) == 0
    assert 'no CUDA device is present' in capsys.readouterr().out
    assert json.loads((tmp_path / 'g.json').read_text()) == {'cuda_available': False}
