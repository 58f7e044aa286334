"""spconv on CPU (through rdd.ops.spconv_compat) against dense conv3d, at the DEFAULT thread count."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from rdd.ops.spconv_compat import spconv, spconv_cpu_self_check

GRID = (41, 64, 64)  # (z, y, x)
BATCH = 2
CIN, COUT = 4, 6
TOL = 1e-5


def _random_input(num_per_sample=2500, seed=0, grid=GRID):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b in range(BATCH):
        flat = torch.randperm(grid[0] * grid[1] * grid[2], generator=g)[:num_per_sample]
        z = flat // (grid[1] * grid[2])
        y = (flat // grid[2]) % grid[1]
        x = flat % grid[2]
        coords.append(torch.stack([torch.full_like(z, b), z, y, x], 1))
    coords = torch.cat(coords).int()
    feats = torch.randn(coords.shape[0], CIN, generator=g)
    return feats, coords


def _to_dense(feats, coords, grid):
    dense = feats.new_zeros(BATCH, *grid, feats.shape[1])
    c = coords.long()
    dense = dense.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), feats)
    return dense.permute(0, 4, 1, 2, 3)


def _mask_from(coords, grid):
    m = torch.zeros(BATCH, 1, *grid)
    c = coords.long()
    m[c[:, 0], 0, c[:, 1], c[:, 2], c[:, 3]] = 1
    return m


def _randomise(layer, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.2)
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))


def _dense_weight(w):
    """spconv KRSC [out, kz, ky, kx, in] -> conv3d [out, in, kz, ky, kx]."""
    return w.permute(0, 4, 1, 2, 3)


def _assert_close(actual, ref, what):
    """float32 sparse result against the float64 dense reference: max|diff| / max(1, max|ref|) <= TOL."""
    assert actual.shape == ref.shape, what
    err = (actual.double() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
    assert err <= TOL, f'{what}: normalised error {err:.2e} > {TOL}'


def _check(sp_out, dense_out, out_mask, sp_inputs, dense_inputs):
    """Forward equal on active output sites, zero elsewhere; gradients equal for a random loss.

    dense_out / dense_inputs are float64 (the reference); sp_* are spconv's float32 tensors.
    """
    sp_dense = sp_out.dense()
    _assert_close(sp_dense, dense_out * out_mask, 'forward')
    gmap = torch.randn(dense_out.shape, generator=torch.Generator().manual_seed(7))
    grads_sp = torch.autograd.grad((sp_dense * gmap).sum(), sp_inputs)
    grads_dn = torch.autograd.grad((dense_out * out_mask * gmap.double()).sum(), dense_inputs)
    for name, a, b in zip(['d_features', 'd_weight', 'd_bias'], grads_sp, grads_dn):
        _assert_close(a, b, name)


def _leaf_params(layer):
    """float64 leaf copies of the layer's weight and bias (for the dense reference)."""
    w = layer.weight.detach().double().requires_grad_(True)
    b = layer.bias.detach().double().requires_grad_(True) if layer.bias is not None else None
    return w, b


@pytest.fixture(params=[(True, True), (True, False), (False, True), (False, False)],
                ids=['train-bias', 'train-nobias', 'eval-bias', 'eval-nobias'])
def mode(request):
    return request.param


def _run_layer(layer, train, feats, coords, grid):
    layer.train(train)
    f = feats.clone().requires_grad_(True)
    x = spconv.SparseConvTensor(f, coords, list(grid), BATCH)
    return f, layer(x)


def test_subm_conv_matches_dense(mode):
    train, bias = mode
    feats, coords = _random_input()
    layer = spconv.SubMConv3d(CIN, COUT, 3, padding=1, bias=bias, indice_key='subm1')
    _randomise(layer, 1)
    f, out = _run_layer(layer, train, feats, coords, GRID)
    assert torch.equal(out.indices, coords)  # SubM: output only at the input sites
    fd = feats.double().requires_grad_(True)
    w, b = _leaf_params(layer)
    dense = F.conv3d(_to_dense(fd, coords, GRID), _dense_weight(w), b, padding=1)
    sp_inputs = [f, layer.weight] + ([layer.bias] if bias else [])
    dn_inputs = [fd, w] + ([b] if bias else [])
    _check(out, dense, _mask_from(coords, GRID), sp_inputs, dn_inputs)


@pytest.mark.parametrize('ksize,stride,padding,grid', [
    (3, 2, 1, GRID),                        # the conv2..conv4 downsampling kind
    ((3, 1, 1), (2, 1, 1), 0, (5, 64, 64)),  # the conv_out kind
], ids=['k3s2', 'k311s211'])
def test_sparse_conv_matches_dense(mode, ksize, stride, padding, grid):
    train, bias = mode
    feats, coords = _random_input(num_per_sample=2500 if grid == GRID else 1200, grid=grid)
    layer = spconv.SparseConv3d(CIN, COUT, ksize, stride=stride, padding=padding, bias=bias)
    _randomise(layer, 2)
    f, out = _run_layer(layer, train, feats, coords, grid)
    fd = feats.double().requires_grad_(True)
    w, b = _leaf_params(layer)
    dense = F.conv3d(_to_dense(fd, coords, grid), _dense_weight(w), b, stride=stride, padding=padding)
    # active outputs = sites whose receptive field holds an active input
    k = ksize if isinstance(ksize, tuple) else (ksize,) * 3
    reach = F.conv3d(_mask_from(coords, grid), torch.ones(1, 1, *k), stride=stride, padding=padding) > 0
    out_mask = _mask_from(out.indices, tuple(out.spatial_shape))
    assert torch.equal(out_mask.bool(), reach)
    sp_inputs = [f, layer.weight] + ([layer.bias] if bias else [])
    dn_inputs = [fd, w] + ([b] if bias else [])
    _check(out, dense, out_mask, sp_inputs, dn_inputs)


def test_inverse_conv_matches_dense(mode):
    train, bias = mode
    feats, coords = _random_input()
    down = spconv.SparseConv3d(CIN, CIN, 3, stride=2, padding=1, bias=False, indice_key='down1')
    inv = spconv.SparseInverseConv3d(CIN, COUT, 3, indice_key='down1', bias=bias)
    _randomise(down, 3)
    _randomise(inv, 4)
    down.train(train)
    inv.train(train)
    x = spconv.SparseConvTensor(feats, coords, list(GRID), BATCH)
    mid = down(x)
    mid_feats = mid.features.detach().clone().requires_grad_(True)
    out = inv(mid.replace_feature(mid_feats))
    assert torch.equal(out.indices, coords)  # inverse conv restores the original sites
    assert list(out.spatial_shape) == list(GRID)
    fd = mid_feats.detach().double().requires_grad_(True)
    w, b = _leaf_params(inv)
    mid_grid = tuple(mid.spatial_shape)
    out_pad = [GRID[i] - ((mid_grid[i] - 1) * 2 - 2 + 3) for i in range(3)]
    dense = F.conv_transpose3d(_to_dense(fd, mid.indices, mid_grid), w.permute(4, 0, 1, 2, 3), b,
                               stride=2, padding=1, output_padding=out_pad)
    sp_inputs = [mid_feats, inv.weight] + ([inv.bias] if bias else [])
    dn_inputs = [fd, w] + ([b] if bias else [])
    _check(out, dense, _mask_from(coords, GRID), sp_inputs, dn_inputs)


def _small_net():
    torch.manual_seed(0)
    return spconv.SparseSequential(
        spconv.SubMConv3d(CIN, 16, 3, padding=1, bias=True, indice_key='s1'),
        spconv.SparseConv3d(16, 32, 3, stride=2, padding=1, bias=False, indice_key='d1'),
        spconv.SubMConv3d(32, 32, 3, padding=1, bias=True, indice_key='s2'),
        spconv.SparseInverseConv3d(32, 8, 3, indice_key='d1', bias=True),
    )


def _net_forward_backward(net, feats, coords):
    f = feats.clone().requires_grad_(True)
    out = net(spconv.SparseConvTensor(f, coords, list(GRID), BATCH))
    out.features.square().sum().backward()
    return out.features.detach(), f.grad, net[1].weight.grad.clone()


def test_bitwise_repeatable_and_thread_independent():
    feats, coords = _random_input(num_per_sample=4000, seed=5)
    net = _small_net()
    runs = []
    for _ in range(2):
        net.zero_grad()
        runs.append(_net_forward_backward(net, feats, coords))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    # against a 1-thread run (where spconv's own scatter was already correct)
    nthreads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        net.zero_grad()
        single = _net_forward_backward(net, feats, coords)
    finally:
        torch.set_num_threads(nthreads)
    for a, b in zip(runs[0], single):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_eval_forward_without_grad_runs_biased_subm():
    feats, coords = _random_input(num_per_sample=500)
    layer = spconv.SubMConv3d(CIN, COUT, 3, padding=1, bias=True).eval()
    _randomise(layer, 9)
    x = spconv.SparseConvTensor(feats, coords, list(GRID), BATCH)
    with torch.no_grad():
        out_eval = layer(x).features
        out_train = layer.train()(x).features
    assert torch.equal(out_eval, out_train)


def test_cpu_autocast_runs_sparse_convs_in_fp32():
    """Patch 7: spconv has no bf16 CPU kernels; under a bf16 CPU autocast the conv runs as without it."""
    feats, coords = _random_input(num_per_sample=500)
    layer = spconv.SubMConv3d(CIN, COUT, 3, padding=1, bias=True).eval()
    _randomise(layer, 10)
    x = spconv.SparseConvTensor(feats, coords, list(GRID), BATCH)
    with torch.no_grad():
        ref = layer(x).features
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = layer(x.replace_feature(feats.bfloat16())).features  # bf16 features from a dense layer, too
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-2, rtol=1e-2)  # the input was rounded to bf16
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.equal(layer(x).features, ref)


def test_self_check_patched_scatter_is_exact():
    res = spconv_cpu_self_check(num_rows=3000, trials=3)
    assert res['threads'] == torch.get_num_threads()
    assert res['patched_wrong_rows'] == [0, 0, 0]
    assert res['patched_max_abs_err'] == [0.0, 0.0, 0.0]
    assert len(res['raw_wrong_rows']) == 3


def test_patches_installed_and_idempotent():
    import importlib
    import spconv.pytorch.ops as ops
    import spconv.pytorch.cppcore as cppcore
    from rdd.ops import spconv_compat
    fwd = spconv.conv.SparseConvolution._conv_forward
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        spconv_compat._apply_patches()
    assert spconv.conv.SparseConvolution._conv_forward is fwd
    assert ops.SpconvOps.scatter_add_cpu is spconv_compat.scatter_add_cpu_safe
    assert cppcore.get_current_stream is spconv_compat._get_current_stream
    assert ops.get_current_stream is spconv_compat._get_current_stream
    assert spconv.core.scatter_nd is spconv_compat._scatter_nd
    if not torch.cuda.is_available():
        assert cppcore.get_current_stream() == 0
    assert importlib.import_module('rdd.ops.spconv_compat').spconv is spconv


def test_cpu_input_runs_native_algo_even_if_layer_chose_implicit_gemm():
    """GPU wheels default to MaskImplicitGemm, which refuses CPU tensors; CPU inputs must use Native."""
    from spconv.core import ConvAlgo
    feats, coords = _random_input(num_per_sample=800, seed=3)
    net = _small_net()
    ref = _net_forward_backward(net, feats, coords)
    net.zero_grad()
    for m in net:
        m.algo = ConvAlgo.MaskImplicitGemm  # what spconv-cu1xx picks by default
    got = _net_forward_backward(net, feats, coords)
    assert all(m.algo == ConvAlgo.MaskImplicitGemm for m in net)  # the layer setting is left as it was
    for a, b in zip(ref, got):
        assert torch.equal(a, b)


def test_dense_is_warning_free_and_correct():
    feats, coords = _random_input(num_per_sample=300, seed=11)
    x = spconv.SparseConvTensor(feats, coords, list(GRID), BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        dense = x.dense()
        dense_last = x.dense(channels_first=False)
    assert torch.equal(dense, _to_dense(feats, coords, GRID))
    assert torch.equal(dense_last, dense.permute(0, 2, 3, 4, 1))


def test_rows_of_one_kernel_offset_are_unique():
    """Why a per-offset scatter has no write conflict: within one kernel offset every output site has at most one
    input site and vice versa, for SubM, strided and (through the same pairs) inverse convs."""
    feats, coords = _random_input(num_per_sample=3000, seed=4)
    x = spconv.SparseConvTensor(feats, coords, list(GRID), BATCH)
    net = spconv.SparseSequential(spconv.SubMConv3d(CIN, CIN, 3, padding=1, indice_key='u_s'),
                                  spconv.SparseConv3d(CIN, CIN, 3, stride=2, padding=1, indice_key='u_d'))
    with torch.no_grad():
        out = net(x)
    assert set(out.indice_dict) == {'u_s', 'u_d'}
    for key, ind in out.indice_dict.items():
        pairs, num = ind.indice_pairs, ind.indice_pair_num
        assert int(num.sum()) > 0
        for k in range(pairs.shape[1]):
            for side in (0, 1):
                rows = pairs[side, k, :int(num[k])]
                assert len(torch.unique(rows)) == len(rows), (key, k, side)


def test_matches_dense_at_two_threads():
    """spconv's CPU kernels use torch's OpenMP runtime: at 2 threads its own scatter races; ours must not."""
    from rdd.ops import spconv_compat
    assert spconv_compat._OMP_RUNTIMES  # the race-free single-thread scatter is the one in use here
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for _ in range(2):
            test_subm_conv_matches_dense((True, True))
            test_sparse_conv_matches_dense((True, False), 3, 2, 1, GRID)
            test_inverse_conv_matches_dense((True, True))
        assert torch.get_num_threads() == 2  # the scatter restores the thread count it changes
    finally:
        torch.set_num_threads(threads)
