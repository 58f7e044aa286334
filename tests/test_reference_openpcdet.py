"""Our teacher reproduces OpenPCDet's own outputs on the fixed reference batch (../shared/compat/reference).

Recipe and tolerances: ``../shared/compat/reference/README.md`` (teacher 0075 with POINT_CLOUD_RANGE
+-21.6 m, the random OpenPCDet checkpoint loaded strictly, dense tensors within max|d| / max|ref| <= 2e-3).
Runs at the default torch thread count: the spconv CPU fixes must make multi-threaded runs correct.
The fixtures ``reference``, ``train_run`` and ``eval_run`` come from ``reference_utils.shared_reference*``,
cached per test session, so every reference comparison (backbone here, head elsewhere) shares one train and one
eval forward (about 10-20 s each on 2 cores).
"""
import pytest
import torch

from reference_utils import REFERENCE, rel_max_diff, shared_reference, shared_reference_run

pytestmark = pytest.mark.skipif(
    not (REFERENCE / 'pcdet_ref_outputs.pt').is_file(),
    reason=f'OpenPCDet reference files not found in {REFERENCE} (the shared/ folder beside the repository)')

TOL = 2e-3  # README: max|d| / max|ref| <= 2e-3 for dense tensors


@pytest.fixture(scope='module')
def reference():
    """(model, checkpoint state copy, batch npz dict, OpenPCDet outputs), cached for the whole session."""
    return shared_reference()


@pytest.fixture(scope='module')
def train_run(reference):
    return shared_reference_run(train=True)


@pytest.fixture(scope='module')
def eval_run(reference):
    return shared_reference_run(train=False)


def test_checkpoint_loaded_strictly_and_exactly(reference):
    model, state, _, _ = reference
    from rdd.models.checkpoint import read_model_state
    ckpt = read_model_state(REFERENCE / 'openpcdet_cbgs_voxel0075_res3d_centerpoint.random.pth')
    assert list(ckpt) == list(state) and len(state) == 558
    assert all(torch.equal(state[k], v) for k, v in ckpt.items())
    assert model.backbone_3d.sparse_shape == [41, 576, 576]


def test_batch_input_shapes(reference):
    _, _, batch, out = reference
    assert batch['voxels'].shape == (38987, 10, 5) and int(batch['batch_size']) == 2
    assert tuple(out['train']['spatial_features'].shape) == (2, 256, 72, 72)


def test_train_spatial_features(train_run, reference):
    ref = reference[3]['train']
    got = train_run['batch_dict']['spatial_features']
    assert rel_max_diff(got, ref['spatial_features']) <= TOL
    assert train_run['batch_dict']['spatial_features_stride'] == 8


def test_train_spatial_features_2d(train_run, reference):
    ref = reference[3]['train']
    assert rel_max_diff(train_run['batch_dict']['spatial_features_2d'], ref['spatial_features_2d']) <= TOL


def test_train_does_not_modify_gt_boxes(train_run, reference):
    ref = reference[3]['train']
    assert torch.equal(train_run['gt_boxes_before'], ref['gt_boxes_before'])
    assert torch.equal(train_run['batch_dict']['gt_boxes'], ref['gt_boxes_before'])


def test_train_loss_reported(train_run):
    tb = train_run['tb_dict']
    assert abs(tb['loss_rpn'] - float(train_run['loss'])) <= 1e-4 * abs(tb['loss_rpn'])


def test_train_bn_running_stats_match_batch_statistics(train_run, reference):
    """After one train forward, running = 0.99 * checkpoint + 0.01 * batch statistic (momentum 0.01 everywhere
    but the head's default-momentum BNs); the batch statistics are OpenPCDet's ``eval_bncal`` buffers."""
    model, state, _, out = reference
    bncal = out['eval_bncal']['bn_buffers']
    after = train_run['bn_buffers_after']
    assert set(bncal) == set(after) and len(bncal) == 144
    momenta = {name: m.momentum for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    worst = 0.0
    for key, want in bncal.items():
        mom = momenta[key.rsplit('.', 1)[0]]
        implied = (after[key].double() - (1 - mom) * state[key].double()) / mom
        worst = max(worst, rel_max_diff(implied, want.double()))
    assert worst <= 1e-3
    change = max(float((after[k] - state[k]).abs().max()) for k in after)
    assert change == pytest.approx(float(out['train']['bn_running_stats_max_abs_change']), rel=1e-3)


@pytest.mark.parametrize('name,channels', [('spatial_features', 256), ('spatial_features_2d', 512)])
def test_eval_channel_summaries(eval_run, reference, name, channels):
    ref = reference[3]['eval']
    bev = eval_run['batch_dict'][name]
    assert bev.shape[:2] == (2, channels)
    mean = bev.mean(dim=(2, 3))
    absmax = bev.abs().amax(dim=(2, 3))
    assert rel_max_diff(mean, ref[f'{name}_channel_mean']) <= TOL
    assert rel_max_diff(absmax, ref[f'{name}_channel_absmax']) <= TOL
