"""Each new baseline trains one epoch through tools/train.py and evaluates through tools/test.py on the tiny
synthetic set: the tiny teacher / student (tests/configs/tiny_kd.yaml) with the KD_LOSSES entries of the shipped
configs/kd_<name>_cp_voxel_s.yaml, so what is trained is what ships."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rdd.config import cfg_from_yaml_file
from rdd.engine import train_pipeline
from rdd.engine.logging_utils import read_scalar_log

REPO = Path(__file__).resolve().parents[1]
BASELINES = {'fg': 'FGLoss', 'gid_f': 'GIDFeatureLoss', 'gid_l': 'GIDLogitLoss', 'lad': 'LADLoss'}


def tiny_config(tmp_path, name, teacher_ckpt):
    shipped = cfg_from_yaml_file(REPO / 'configs' / f'kd_{name}_cp_voxel_s.yaml')
    losses = [{k: v for k, v in dict(entry).items()} for entry in shipped.MODEL.KD_LOSSES]
    assert [entry['NAME'] for entry in losses] == [BASELINES[name]]
    text = yaml.safe_dump({'_BASE_CONFIG_': str(REPO / 'tests' / 'configs' / 'tiny_kd.yaml'),
                           'MODEL': {'TEACHER_CKPT': str(teacher_ckpt), 'KD_LOSSES': json.loads(json.dumps(losses))}})
    path = tmp_path / 'configs' / f'kd_{name}_tiny.yaml'  # its run dir: <output_root>/configs/<stem>/default
    path.parent.mkdir()
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(BASELINES))
def test_baseline_trains_one_epoch_and_evaluates(name, synth_nusc, tiny_teacher_ckpt, tmp_path):
    data = ['DATA_CONFIG.DATA_PATH', synth_nusc.data_path, 'DATA_CONFIG.VERSION', synth_nusc.version,
            'DATA_CONFIG.BALANCED_RESAMPLING', 'False', 'DATA_CONFIG.MAX_SWEEPS', '2']
    cfg = tiny_config(tmp_path, name, tiny_teacher_ckpt)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_pipeline.main(['--cfg', str(cfg), '--batch_size', '4', '--epochs', '1', '--workers', '0', '--output_root',
                             str(tmp_path / 'out'), '--fix_random_seed', '--skip_eval', '--set', *data])
    finally:
        torch.set_num_threads(old)
    run = tmp_path / 'out' / 'configs' / cfg.stem / 'default'
    log = read_scalar_log(run / 'scalars.jsonl')
    assert sorted(log) == [0, 1]  # 8 train samples, batch 4
    key = f'kd/{BASELINES[name]}'
    assert all(key in log[it] and torch.isfinite(torch.tensor(log[it]['loss'])) for it in log), log[0]
    ckpt = run / 'ckpt' / 'checkpoint_epoch_1.pth'
    proc = subprocess.run([sys.executable, 'tools/test.py', '--cfg', str(cfg), '--ckpt', str(ckpt), '--workers', '0',
                           '--batch_size', '2', '--output_root', str(tmp_path / 'out'), '--set', *data], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith('mAP: ') and float(line.split()[1]) >= 0 for line in lines), proc.stdout[-2000:]
    assert any(line.startswith('NDS: ') for line in lines)
    first = {line.split()[0]: line for line in reversed(lines) if line.startswith(('mAP: ', 'NDS: '))}
    print(f"{name}: {first['mAP:']} {first['NDS:']}")
