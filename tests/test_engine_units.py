"""Small engine pieces: batch conversion, batch splitting, prediction merging, run-dir naming, RNG capture."""
import random

import numpy as np
import pytest
import torch
from easydict import EasyDict

from rdd.engine.batch import load_data_to_device
from rdd.engine.dist import per_process_batch_size
from rdd.engine.evaluator import Evaluator, merge_rank_predictions
from rdd.engine.rng import get_rng_state, set_rng_state
from rdd.engine.run_dir import RunDir, exp_group_and_tag, save_resolved_config


def test_load_data_to_device_dtypes():
    batch = {'points': np.zeros((3, 6), np.float64), 'voxel_coords': np.zeros((2, 4), np.float32),
             'voxel_num_points': np.array([1, 2]), 'frame_id': np.array(['a', 'b']), 'metadata': [{'token': 't'}],
             'batch_size': 2, 'flags': np.array([True, False]), 'gt_boxes': torch.zeros(2, 1, 10, dtype=torch.float64)}
    out = load_data_to_device(batch, 'cpu')
    assert out['points'].dtype == torch.float32 and out['voxel_coords'].dtype == torch.int32
    assert out['voxel_num_points'].dtype == torch.float32 and out['flags'].dtype == torch.bool
    assert out['gt_boxes'].dtype == torch.float32
    assert isinstance(out['frame_id'], np.ndarray) and out['batch_size'] == 2 and out['metadata'][0]['token'] == 't'


def test_batch_size_split():
    assert per_process_batch_size(4, 2) == 2
    with pytest.raises(ValueError, match='not divisible by the world size 2'):
        per_process_batch_size(3, 2)


def test_merge_rank_predictions_interleaves_and_dedupes():
    # 5 samples on 2 ranks with a padded DistributedSampler: rank0 = 0,2,4 ; rank1 = 1,3,0 (padding repeats 0)
    ann = lambda i: {'frame_id': f'f{i}', 'metadata': {'token': f't{i}'}}
    merged = merge_rank_predictions([[ann(0), ann(2), ann(4)], [ann(1), ann(3), ann(0)]])
    assert [a['frame_id'] for a in merged] == ['f0', 'f1', 'f2', 'f3', 'f4']


def test_summary_text_has_map_and_nds_lines():
    text = Evaluator.summary_text('Per-class results...', {'mAP': 0.25, 'NDS': 0.5})
    lines = text.splitlines()
    assert 'mAP: 0.2500' in lines and 'NDS: 0.5000' in lines
    assert Evaluator.summary_text('mAP: 0.1\nNDS: 0.2', {'mAP': 0.1, 'NDS': 0.2}).count('mAP:') == 1


def test_exp_group_and_run_dir(tmp_path):
    root = tmp_path / 'repo'
    (root / 'configs' / 'demo').mkdir(parents=True)
    cfg_file = root / 'configs' / 'demo' / 'cp_voxel.yaml'
    assert exp_group_and_tag(cfg_file, root) == ('demo', 'cp_voxel')
    assert exp_group_and_tag('cfgs/nuscenes_models/x.yaml') == ('nuscenes_models', 'x')
    (root / 'tests' / 'configs').mkdir(parents=True)
    assert exp_group_and_tag(root / 'tests' / 'configs' / 't.yaml', root) == ('configs', 't')
    assert exp_group_and_tag(tmp_path / 'elsewhere' / 'e.yaml', root) == ('elsewhere', 'e')
    run = RunDir(tmp_path / 'out', 'demo', 'cp_voxel', 'tag')
    assert not run.output_dir.exists()
    run.create()
    assert run.ckpt_dir.is_dir() and run.tb_dir.is_dir() and run.eval_dir.is_dir()
    cfg = EasyDict(A={'B': (1, 2)}, ROOT_DIR=tmp_path)
    path = save_resolved_config(cfg, run.output_dir, {'git_sha': 'abc', 'seed': 666, 'world_size': 2,
                                                      'effective_batch_size': 4})
    text = path.read_text()
    assert '# git_sha: abc' in text and '# effective_batch_size: 4' in text and 'B:\n  - 1' in text


def test_rng_roundtrip():
    gen = torch.Generator().manual_seed(3)
    state = get_rng_state([gen])
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    set_rng_state(state, [gen])
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    assert a == b
    torch.save(state, '/dev/null')
