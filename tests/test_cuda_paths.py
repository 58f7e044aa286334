"""The same code on CUDA as on CPU (skipped without a CUDA device; run by bench/gpu_check.py)."""
import numpy as np
import pytest
import torch

from rdd.datasets.processor import Voxelizer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')]


def test_voxelizer_on_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-20, 20, (50000, 2)), rng.uniform(-4, 2, (50000, 1)),
                          rng.uniform(0, 1, (50000, 2))], 1).astype(np.float32)
    vox = Voxelizer([0.1, 0.1, 0.2], [-20, -20, -5, 20, 20, 3], 5, 64, 60000)  # no voxel overflows 64 points
    v, c, n = vox(pts)
    vg, cg, ng = vox(torch.from_numpy(pts).cuda())
    assert vg.is_cuda and len(vg) == len(v)
    cpu = {tuple(k): i for i, k in enumerate(c)}  # the CUDA kernel may number the voxels differently
    order = np.array([cpu[tuple(k)] for k in cg.cpu().numpy()])
    np.testing.assert_array_equal(ng.cpu().numpy(), n[order])
    np.testing.assert_allclose(np.sort(vg.cpu().numpy(), axis=1), np.sort(v[order], axis=1))


def test_folded_teacher_on_cuda_matches_unfolded():
    from test_fold_bn import STUDENT_CFG, _maps, _randomise_bn, make_batch
    from rdd.config import cfg_from_yaml_file
    from rdd.models import build_model
    from rdd.models.fold_bn import fold_batchnorm, run_frozen
    cfg = cfg_from_yaml_file(STUDENT_CFG)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _randomise_bn(model, 3)
    model = model.cuda()
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in make_batch(cfg).items()}
    with torch.no_grad():
        ref = _maps(model, batch)
    got = run_frozen(_maps, fold_batchnorm(model), batch)
    for key, r in ref.items():
        assert got[key].is_cuda
        assert (got[key] - r).abs().max().item() <= 1e-4 * max(r.abs().max().item(), 1e-6), key


def test_sparse_to_dense_on_cuda_is_spconvs_dense():
    from rdd.models.backbones_2d.height_compression import sparse_to_dense
    from rdd.ops.spconv_compat import spconv
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(2 * 2 * 50 * 60, generator=g)[:900]  # unique (b, z, y, x) sites
    idx = torch.stack([flat // 6000, (flat // 3000) % 2, (flat // 60) % 50, flat % 60], 1).int().cuda()
    feats = torch.randn(900, 8, generator=g).cuda().requires_grad_(True)
    x = spconv.SparseConvTensor(feats, idx, [2, 50, 60], 2)
    assert torch.equal(sparse_to_dense(x), x.dense())
