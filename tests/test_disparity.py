"""tools/disparity.py (the paper's Fig. 2): region sampling, the least-squares width map, and the tool on the
tiny configs."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.kdbench import disparity as D  # noqa: E402

CFG_DIR = ROOT / 'tests' / 'configs'


def test_region_points_axis_aligned_and_rotated():
    # a 4 m x 2 m box at (10, -2), grid 2: cell centres at +-1 m along x and +-0.5 m along y
    box = torch.tensor([[10.0, -2.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    pts = D.region_points(box, grid=2)[0]
    assert pts.tolist() == [[9.0, -2.5], [11.0, -2.5], [9.0, -1.5], [11.0, -1.5]]
    # the same box turned by 90 degrees: its length now runs along y
    box[0, 6] = math.pi / 2
    pts = D.region_points(box, grid=2)[0]
    assert torch.allclose(pts, torch.tensor([[10.5, -3.0], [10.5, -1.0], [9.5, -3.0], [9.5, -1.0]]), atol=1e-6)


def test_sample_map_reads_cell_centres_and_interpolates_a_ramp():
    # map (C=2, H=3, W=4), origin (-2, -1.5), cells 1 m: cell (i, j) centre at x = -1.5 + j, y = -1 + i
    xs = torch.arange(4, dtype=torch.float32)[None, :].expand(3, 4)
    ys = torch.arange(3, dtype=torch.float32)[:, None].expand(3, 4)
    fmap = torch.stack([10 * xs + ys, -ys])
    pts = torch.tensor([[-1.5, -1.0], [0.5, 1.0], [-1.0, -0.5], [0.25, 0.0]])
    out = D.sample_map(fmap, pts, (-2.0, -1.5), (1.0, 1.0))
    # cell centres exactly; then bilinear between centres: a linear ramp is reproduced exactly
    assert torch.allclose(out, torch.tensor([[0.0, 0.0], [22.0, -2.0], [5.5, -0.5], [18.5, -1.0]]), atol=1e-5)
    # outside the map: zeros
    assert D.sample_map(fmap, torch.tensor([[50.0, 50.0]]), (-2.0, -1.5), (1.0, 1.0)).abs().max() == 0


def test_fit_affine_recovers_an_affine_map_and_distances_by_hand():
    torch.manual_seed(0)
    xs = torch.randn(500, 3)
    w, b = torch.tensor([[1.0, 0.0], [2.0, -1.0], [0.5, 3.0]]), torch.tensor([0.25, -2.0])
    ys = xs @ w + b
    weight = D.fit_affine(xs, ys, ridge=1e-9)
    assert torch.allclose(weight[:-1], w, atol=1e-4) and torch.allclose(weight[-1], b, atol=1e-4)
    assert D.r_squared(D.apply_affine(weight, xs), ys) == pytest.approx(1.0, abs=1e-6)
    # 2 regions x 2 points x 2 channels: region 0 differs by 1 in one of its 4 values -> 1/4; region 1 by 2 and 2
    # in two values -> (4 + 4) / 4 = 2
    adapted = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    dist = D.region_distances(adapted, torch.zeros(4, 2), num_points=2)
    assert dist.tolist() == [0.25, 2.0]


def test_teacher_proposals_keep_the_best_scores_above_the_threshold():
    pred = {'pred_boxes': torch.arange(40, dtype=torch.float32).view(4, 10),
            'pred_scores': torch.tensor([0.2, 0.9, 0.5, 0.31]), 'pred_labels': torch.ones(4, dtype=torch.long)}
    out = D.teacher_proposals([pred], score_thresh=0.3, max_per_sample=2)
    assert len(out) == 1 and out[0].shape == (2, 7)
    assert out[0][:, 0].tolist() == [10.0, 20.0]  # scores 0.9 then 0.5; 0.31 cut by the cap, 0.2 by the threshold
    pred['pred_boxes'][1, 3] = float('nan')  # a diverged teacher's box is never a region
    out = D.teacher_proposals([pred], score_thresh=0.3, max_per_sample=2)
    assert out[0][:, 0].tolist() == [20.0, 30.0]


def _save_random(cfg_file, path, seed):
    from rdd.config import cfg_from_yaml_file
    from rdd.engine.checkpoint_io import checkpoint_state, save_checkpoint
    from rdd.models import build_model
    torch.manual_seed(seed)
    return save_checkpoint(checkpoint_state(build_model(cfg_from_yaml_file(str(cfg_file)))), str(path))


def test_disparity_tool_on_tiny_configs(synth_nusc, tiny_teacher_ckpt, tmp_path):
    """Teacher vs itself (distance ~0), a random student, and a Distiller checkpoint through its own adapter."""
    import rdd.distill  # noqa: F401  (registers the Distiller)
    from rdd.config import cfg_from_yaml_file
    from rdd.engine.checkpoint_io import checkpoint_state, save_checkpoint
    from rdd.models import build_model
    student_ckpt = _save_random(CFG_DIR / 'tiny_student.yaml', tmp_path / 'student.pth', seed=3)
    kd_cfg = tmp_path / 'kd_fitnet.yaml'
    kd_cfg.write_text(yaml.safe_dump({'_BASE_CONFIG_': str(CFG_DIR / 'tiny_kd.yaml'), 'MODEL': {
        'TEACHER_CKPT': str(tiny_teacher_ckpt), 'KD_LOSSES': [{'NAME': 'FitNetLoss', 'WEIGHT': 1.0}]}}))
    torch.manual_seed(4)
    kd_ckpt = save_checkpoint(checkpoint_state(build_model(cfg_from_yaml_file(str(kd_cfg)))), str(tmp_path / 'kd.pth'))
    out = tmp_path / 'disp' / 'tiny'
    argv = ['--teacher_cfg', str(CFG_DIR / 'tiny_teacher.yaml'), '--teacher_ckpt', str(tiny_teacher_ckpt),
            '--student', 'teacher itself', str(CFG_DIR / 'tiny_teacher.yaml'), str(tiny_teacher_ckpt),
            '--student', 'random student', str(CFG_DIR / 'tiny_student.yaml'), str(student_ckpt),
            '--student', 'fitnet', str(kd_cfg), str(kd_ckpt), '--adapter', 'checkpoint', '--score_thresh', '0.0',
            '--fit_samples', '4', '--grid', '3', '--out', str(out),
            '--set', 'DATA_CONFIG.DATA_PATH', synth_nusc.data_path, 'DATA_CONFIG.VERSION', synth_nusc.version]
    from bench.kdbench.disparity_tool import main
    assert main(argv) == 0
    doc = json.loads(out.with_suffix('.json').read_text())
    assert out.with_suffix('.png').stat().st_size > 0
    assert doc['val_samples'] == len(synth_nusc.val_scenes) * 4 and doc['regions'] > 0 and doc['fit_regions'] > 0
    itself, random_student, fitnet = doc['students']
    assert [s['adapter'] for s in doc['students']] == ['lstsq', 'lstsq', 'checkpoint']
    assert itself['normalized']['count'] == doc['regions'] == len(fitnet['normalized_per_region'])
    assert itself['r2_val'] > 0.99 and itself['normalized']['median'] < 1e-3  # fit on few regions: not exact
    assert random_student['normalized']['median'] > 10 * itself['normalized']['median']
    assert all(v >= 0 for s in doc['students'] for v in s['normalized_per_region'])


def test_disparity_tool_refuses_a_student_on_other_voxels(synth_nusc, tiny_teacher_ckpt, tmp_path):
    other = tmp_path / 'other_voxels.yaml'
    other.write_text(yaml.safe_dump({'_BASE_CONFIG_': str(CFG_DIR / 'tiny_student.yaml'), 'DATA_CONFIG': {
        'POINT_CLOUD_RANGE': [-25.6, -25.6, -5.0, 25.6, 25.6, 3.0]}}))
    ckpt = _save_random(other, tmp_path / 'other.pth', seed=0)
    from bench.kdbench.disparity_tool import main
    with pytest.raises(ValueError, match="student 'wide'.*voxel grid differs"):
        main(['--teacher_cfg', str(CFG_DIR / 'tiny_teacher.yaml'), '--teacher_ckpt', str(tiny_teacher_ckpt),
              '--student', 'wide', str(other), str(ckpt), '--out', str(tmp_path / 'x'),
              '--set', 'DATA_CONFIG.DATA_PATH', synth_nusc.data_path, 'DATA_CONFIG.VERSION', synth_nusc.version])
