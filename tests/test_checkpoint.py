"""Checkpoint reading and strict / non-strict loading, incl. OpenPCDet's own random checkpoint."""
import logging

import pytest
import torch

from reference_utils import COMPAT, model_cfg_dict, SMALL_RANGE
from rdd.models import build_model
from rdd.models.checkpoint import (CheckpointError, adapt_spconv_weight, load_state_dict_strict,
                                   read_checkpoint, read_model_state, spconv_weight_keys)

S_CKPT = COMPAT / 'openpcdet_cp_voxel_s_0075.random.pth'
needs_compat = pytest.mark.skipif(not S_CKPT.is_file(), reason=f'reference checkpoint absent: {S_CKPT}')


@pytest.fixture(scope='module')
def small_models():
    torch.manual_seed(0)
    return {v: build_model(model_cfg_dict(v, point_cloud_range=SMALL_RANGE)) for v in ('teacher_0075', 'cp_voxel_s')}


@needs_compat
def test_openpcdet_random_checkpoint_loads_strictly_into_s(small_models):
    model = small_models['cp_voxel_s']
    state = read_model_state(S_CKPT)  # legacy (non-zip) torch format, weights_only
    loaded, problems = load_state_dict_strict(model, state, strict=True)
    assert len(loaded) == 558 and not any(problems.values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    ckpt = read_checkpoint(S_CKPT)
    assert ckpt['epoch'] == 0 and ckpt['it'] == 0 and ckpt['version'].startswith('pcdet')


@needs_compat
def test_openpcdet_s_checkpoint_refused_by_teacher_with_key_names(small_models):
    teacher = small_models['teacher_0075']
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        teacher.load_params_from_file(str(S_CKPT), strict=True)
    msg = str(err.value)
    assert 'mis-shaped: backbone_2d.blocks.0.1.weight checkpoint [64, 256, 3, 3] vs model [128, 256, 3, 3]' in msg
    assert 'dense_head.shared_conv.0.weight' in msg and 'missing' in msg
    # nothing was loaded
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


@needs_compat
def test_non_strict_loads_what_matches_and_logs_rest(small_models, caplog):
    teacher = small_models['teacher_0075']
    state = read_model_state(S_CKPT)
    with caplog.at_level(logging.INFO):
        loaded, problems = load_state_dict_strict(teacher, state, strict=False)
    assert 'backbone_3d.conv_input.0.weight' in loaded
    assert torch.equal(teacher.state_dict()['backbone_3d.conv_input.0.weight'], state['backbone_3d.conv_input.0.weight'])
    assert any(k == 'backbone_2d.blocks.0.1.weight' for k, _, _ in problems['mismatched'])
    assert 'Not updated weight backbone_2d.blocks.0.1.weight' in caplog.text


def test_strict_error_lists_missing_and_unexpected(small_models):
    model = small_models['cp_voxel_s']
    state = dict(model.state_dict())
    state.pop('backbone_3d.conv1.0.bn1.running_var')
    state['backbone_3d.extra.weight'] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, state)
    msg = str(err.value)
    assert 'missing: backbone_3d.conv1.0.bn1.running_var [16]' in msg
    assert 'unexpected: backbone_3d.extra.weight [3]' in msg
    assert '1 missing, 1 unexpected, 0 mis-shaped' in msg


def test_old_spconv_layout_is_permuted(small_models, tmp_path):
    model = small_models['cp_voxel_s']
    sp_keys = spconv_weight_keys(model)
    assert len(sp_keys) == 21 and 'backbone_3d.conv_out.0.weight' in sp_keys
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    # spconv 1.x stores (kD, kH, kW, in, out); KRSC is (out, kD, kH, kW, in)
    old = {k: (v.permute(1, 2, 3, 4, 0).contiguous() if k in sp_keys else v) for k, v in ref.items()}
    assert list(old['backbone_3d.conv_input.0.weight'].shape) == [3, 3, 3, 5, 16]
    torch.save({'model_state': old, 'epoch': 3, 'it': 7}, tmp_path / 'old.pth')
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    model.load_params_from_file(str(tmp_path / 'old.pth'), strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    # spconv 2.x native (kD, kH, kW, out, in), visible on non-square layers
    w = ref['backbone_3d.conv2.0.0.weight']  # (32, 3, 3, 3, 16)
    native = w.permute(1, 2, 3, 0, 4)
    assert torch.equal(adapt_spconv_weight(native, w.shape), w)
    assert adapt_spconv_weight(torch.zeros(2, 2), w.shape).shape == (2, 2)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        read_model_state(tmp_path / 'nope.pth')
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='bad.pth'):
        read_model_state(bad)
    torch.save({'epoch': 1, 'optimizer_state': {'x': 1}}, tmp_path / 'nostate.pth')
    with pytest.raises(CheckpointError, match="nostate.pth has no 'model_state'"):
        read_model_state(tmp_path / 'nostate.pth')
    torch.save({'a.weight': torch.zeros(2)}, tmp_path / 'bare.pth')
    assert list(read_model_state(tmp_path / 'bare.pth')) == ['a.weight']


def test_load_params_with_optimizer_roundtrip(small_models, tmp_path):
    model = small_models['cp_voxel_s']
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.zero_grad()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    model.update_global_step()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / 'checkpoint_epoch_2.pth'
    torch.save({'model_state': state, 'optimizer_state': opt.state_dict(), 'epoch': 2, 'it': 40,
                'version': 'rdd+test'}, path)
    other = build_model(model_cfg_dict('cp_voxel_s', point_cloud_range=SMALL_RANGE))
    opt2 = torch.optim.Adam(other.parameters(), lr=1e-3)
    it, epoch = other.load_params_with_optimizer(str(path), to_cpu=True, optimizer=opt2)
    assert (it, epoch) == (40, 2)
    assert int(other.global_step) == int(model.global_step) >= 1
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())
    assert opt2.state_dict()['state'][0]['step'] == opt.state_dict()['state'][0]['step']
    # optimizer state in a separate '<name>_optim.pth' file, as OpenPCDet also supports
    torch.save({'model_state': state, 'epoch': 5}, tmp_path / 'ck.pth')
    torch.save({'optimizer_state': opt.state_dict()}, tmp_path / 'ck_optim.pth')
    opt3 = torch.optim.Adam(other.parameters(), lr=1e-3)
    assert other.load_params_with_optimizer(str(tmp_path / 'ck.pth'), optimizer=opt3) == (0.0, 5)
    assert len(opt3.state_dict()['state']) == len(opt.state_dict()['state'])
