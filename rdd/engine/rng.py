"""Seeding and capture/restore of every random-number generator a training run touches.

States are stored as tensors, ints and lists only, so checkpoints stay loadable with ``weights_only=True``.
"""
import random

import numpy as np
import torch


def set_random_seed(seed):
    """Seed Python, NumPy and torch (all devices), and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def get_rng_state(extra_generators=()):
    """Snapshot of the Python, NumPy, torch CPU/CUDA generators and of ``extra_generators`` (torch.Generator)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        'python': [py_version, list(py_internal), py_gauss],
        'numpy': [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        'torch': torch.get_rng_state(),
        'extra': [g.get_state() for g in extra_generators],
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, extra_generators=()):
    """Restore a snapshot made by :func:`get_rng_state`."""
    py_version, py_internal, py_gauss = state['python']
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state['numpy']
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state['torch'])
    for gen, gen_state in zip(extra_generators, state.get('extra', [])):
        gen.set_state(gen_state)
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])
