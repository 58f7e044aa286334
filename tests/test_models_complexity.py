"""MAC / parameter counting (rdd.models.complexity) and the tools/flops.py CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference_utils import REPO, SMALL_RANGE, clone_batch, model_cfg_dict, synthetic_batch
from rdd.models import build_model
from rdd.engine.profiling import voxelize_for_model
from rdd.models.complexity import count_macs, count_parameters, sparse_conv_pairs
from rdd.ops.spconv_compat import spconv


def _random_sites(shape, n, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        flat = torch.randperm(int(np.prod(shape)), generator=g)[:n]
        z, y, x = flat // (shape[1] * shape[2]), (flat // shape[2]) % shape[1], flat % shape[2]
        rows.append(torch.stack([torch.full_like(z, b), z, y, x], dim=1))
    return torch.cat(rows).int()


def test_subm_pairs_equal_dense_neighbour_count():
    shape = [7, 16, 16]
    idx = _random_sites(shape, 250)
    x = spconv.SparseConvTensor(torch.ones(len(idx), 1), idx, shape, 2)
    occ = x.dense()
    neighbours = F.conv3d(occ, torch.ones(1, 1, 3, 3, 3), padding=1)
    assert sparse_conv_pairs(idx, shape, 3, subm=True) == int((neighbours * occ).sum())
    # kernel centre only for isolated sites
    lone = torch.tensor([[0, 0, 0, 0], [0, 3, 3, 3]], dtype=torch.int32)
    assert sparse_conv_pairs(lone, shape, 3, subm=True) == 2


@pytest.mark.parametrize('ksize,stride,padding', [(3, 2, 1), ((3, 1, 1), (2, 1, 1), 0), (3, 2, (0, 1, 1))])
def test_strided_pairs_equal_spconv_rulebook(ksize, stride, padding):
    shape = [9, 20, 20]
    idx = _random_sites(shape, 300, seed=1)
    x = spconv.SparseConvTensor(torch.randn(len(idx), 2), idx, shape, 2)
    conv = spconv.SparseConv3d(2, 3, ksize, stride=stride, padding=padding, bias=False, indice_key='k')
    y = conv(x)
    ours = sparse_conv_pairs(idx, shape, ksize, stride, padding, out_spatial_shape=y.spatial_shape)
    assert ours == int(y.indice_dict['k'].indice_pair_num.sum())


def test_inverse_conv_counts_the_pairs_it_inverts():
    shape = [9, 20, 20]
    idx = _random_sites(shape, 200, seed=2)
    net = spconv.SparseSequential(
        spconv.SparseConv3d(2, 3, 3, stride=2, padding=1, bias=False, indice_key='d'),
        spconv.SparseInverseConv3d(3, 2, 3, bias=False, indice_key='d'))
    x = spconv.SparseConvTensor(torch.randn(len(idx), 2), idx, shape, 2)
    total, _, layers = count_macs(net, x)
    assert layers[0]['pairs'] == layers[1]['pairs'] > 0
    assert total == layers[0]['pairs'] * 6 * 2


@pytest.fixture(scope='module')
def small_batch():
    return synthetic_batch(num_boxes=(3,), seed=3)


@pytest.fixture(scope='module')
def teacher_count(small_batch):
    model = build_model(model_cfg_dict('teacher_0075', point_cloud_range=SMALL_RANGE))
    return model, count_macs(model, clone_batch(small_batch))


def test_detector_macs_dense_parts_analytic(teacher_count):
    model, (total, per, layers) = teacher_count
    assert model.training  # restored
    hw, hw2 = 40 * 40, 20 * 20
    bev = (hw * 128 * 256 * 9 + 5 * hw * 128 * 128 * 9 + hw2 * 256 * 128 * 9 + 5 * hw2 * 256 * 256 * 9
           + hw * 128 * 256 * 1 + hw2 * 256 * 256 * 4)
    assert per['backbone_2d'] == bev
    # shared 3x3 conv 512->64; per head group 6 branches (5 regression + hm) of 3x3 64->64 then 3x3 64->out
    head = hw * 512 * 64 * 9 + 6 * 6 * hw * 64 * 64 * 9 + hw * 64 * 9 * (6 * (2 + 1 + 3 + 2 + 2) + 10)
    assert per['dense_head'] == head
    sparse = [l for l in layers if 'pairs' in l]
    assert len(sparse) == 21 and per['backbone_3d'] == sum(l['macs'] for l in sparse)
    first = sparse[0]
    assert first['name'] == 'backbone_3d.conv_input.0' and first['macs'] == first['pairs'] * 5 * 16
    assert per['vfe'] == 0 and per['map_to_bev_module'] == 0
    assert total == sum(per.values())
    params, per_params = count_parameters(model)
    assert params == 8_941_590 and per_params['backbone_3d'] == 2_695_312


def test_student_cheaper_than_teacher(teacher_count, small_batch):
    teacher_total, teacher_per = teacher_count[1][0], teacher_count[1][1]
    student = build_model(model_cfg_dict('cp_voxel_xxs', point_cloud_range=SMALL_RANGE))
    total, per, _ = count_macs(student, clone_batch(small_batch))
    assert 0 < total < teacher_total
    assert per['backbone_3d'] < teacher_per['backbone_3d'] and per['backbone_2d'] < teacher_per['backbone_2d']


def test_flops_cli_json(tmp_path):
    pts = np.random.default_rng(0).uniform([-10, -10, -3, 0, 0], [10, 10, 1, 100, 0.5], (3000, 5)).astype(np.float32)
    np.save(tmp_path / 'pts.npy', pts)
    out = tmp_path / 'f.json'
    cmd = [sys.executable, str(REPO / 'tools' / 'flops.py'), '--cfg', str(REPO / 'configs' / 'cp_voxel_xxs.yaml'),
           '--points', str(tmp_path / 'pts.npy'), '--runs', '1', '--json', str(out),
           '--set', 'DATA_CONFIG.POINT_CLOUD_RANGE', '[-12.0,-12.0,-5.0,12.0,12.0,3.0]']
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    (m,) = data['models']
    assert set(m) >= {'cfg', 'params', 'macs', 'latency_ms', 'modules'}
    assert m['macs'] == sum(v['macs'] for v in m['modules'].values()) and m['latency_ms'] > 0
    assert m['modules']['backbone_3d']['macs'] > 0 and m['num_voxels'] > 0
    assert 'GMACs' in res.stdout


def test_voxelize_for_model_uses_config_voxels():
    cfg = model_cfg_dict('cp_voxel_s', point_cloud_range=SMALL_RANGE)
    pts = np.array([[0.01, 0.01, 0.1, 1, 0], [0.02, 0.02, 0.1, 3, 0], [5, 5, 0, 1, 0], [50, 0, 0, 1, 0]], np.float32)
    b = voxelize_for_model(cfg, pts)
    assert b['voxels'].shape[0] == 2 and b['voxel_coords'].shape == (2, 4)
    assert sorted(b['voxel_num_points'].tolist()) == [1, 2]
    assert b['voxel_coords'][:, 0].eq(0).all()
