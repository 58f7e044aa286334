"""Move a collated ``batch_dict`` (numpy arrays from the dataloader) onto the model's device."""
import numpy as np
import torch

#: keys that stay as they are (strings, per-sample metadata, Python objects).
SKIP_KEYS = frozenset({'frame_id', 'metadata', 'calib', 'image_paths', 'ori_shape', 'img_process_infos',
                       'use_lead_xyz', 'batch_size'})
#: keys converted to int32 (everything else numeric becomes float32, as OpenPCDet's ``load_data_to_gpu``).
INT32_KEYS = frozenset({'voxel_coords', 'image_shape'})


def load_data_to_device(batch_dict, device):
    """In place: numpy arrays and tensors in ``batch_dict`` -> torch tensors on ``device``; returns the dict.

    ``voxel_coords (V, 4)`` ``[b, z, y, x]`` and ``image_shape`` become int32, boolean arrays stay bool, every
    other numeric array becomes float32 (as OpenPCDet). Keys in :data:`SKIP_KEYS`, strings and object arrays
    are left untouched.
    """
    device = torch.device(device)
    non_blocking = device.type == 'cuda'
    for key, val in batch_dict.items():
        if key in SKIP_KEYS:
            continue
        if isinstance(val, np.ndarray):
            if val.dtype.kind in 'OUS':  # objects / strings
                continue
            tensor = torch.from_numpy(np.ascontiguousarray(val))
        elif torch.is_tensor(val):
            tensor = val
        else:
            continue
        if key in INT32_KEYS:
            tensor = tensor.to(torch.int32)
        elif tensor.dtype != torch.bool:
            tensor = tensor.float()
        batch_dict[key] = tensor.to(device, non_blocking=non_blocking)
    return batch_dict
