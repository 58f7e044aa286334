"""Datasets: registry, ``build_dataloader`` (OpenPCDet's signature), nuScenes dataset and evaluation.

``DATASETS`` maps ``DATA_CONFIG.DATASET`` names to dataset classes, given lazily as ``'module:Class'`` strings
(or classes registered with :func:`register_dataset`) so that importing ``rdd.datasets`` stays light.
A dataset class must follow OpenPCDet's contract:

* ``__init__(dataset_cfg, class_names, training=True, root_path=None, logger=None)``;
* ``__len__``, ``__getitem__(i) -> dict`` of numpy arrays (``points``, ``voxels``, ``voxel_coords`` ``[z, y, x]``,
  ``voxel_num_points``, ``gt_boxes (M, 7 + C + 1)`` with the 1-based class last, ``frame_id``, ``metadata``);
* ``collate_batch(list) -> batch_dict`` (static), ``generate_prediction_dicts(batch_dict, pred_dicts,
  class_names, output_path=None)`` (static), ``evaluation(det_annos, class_names, output_path=None) ->
  (result_str, result_dict)``;
* attributes ``point_cloud_range``, ``grid_size``, ``voxel_size``, ``point_feature_encoder``, ``class_names``,
  ``merge_all_iters_to_one_epoch(merge, epochs)``.
"""
import functools
import importlib
from functools import partial

import numpy as np

DATASETS = {'NuScenesDataset': 'rdd.datasets.nuscenes_dataset:NuScenesDataset'}

__all__ = ['DATASETS', 'register_dataset', 'get_dataset_class', 'build_dataloader', 'worker_init_fn']


def register_dataset(name):
    """Class decorator adding a dataset class to ``DATASETS`` under ``name``."""
    def deco(cls):
        DATASETS[name] = cls
        return cls
    return deco


def get_dataset_class(name):
    """The dataset class registered as ``name`` (``DATA_CONFIG.DATASET``)."""
    if name not in DATASETS:
        raise KeyError(f'DATA_CONFIG.DATASET {name!r} is not registered; known: {sorted(DATASETS)}')
    entry = DATASETS[name]
    if isinstance(entry, str):
        module, cls_name = entry.split(':')
        entry = DATASETS[name] = getattr(importlib.import_module(module), cls_name)
    return entry


def worker_init_fn(worker_id, seed=None):
    """Seed numpy and ``random`` in a DataLoader worker from torch's per-worker seed.

    torch gives each worker ``base_seed + worker_id`` with ``base_seed`` drawn anew every epoch from the
    loader's generator (seeded from ``seed`` by :func:`build_dataloader`), so the numpy streams differ between
    workers and epochs and are reproducible when ``seed`` is given. Without this, forked workers would share the
    parent's numpy state and draw identical augmentations.
    """
    import random

    import numpy as np
    import torch
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


_SHARED_MIN_BYTES = 1 << 16


class SharedArray:
    """A numpy array travelling from a DataLoader worker as a torch tensor in shared memory (the main process maps
    it) instead of being pickled through a pipe (several copies, serialised in the main process)."""
    __slots__ = ('tensor',)

    def __init__(self, tensor):
        self.tensor = tensor


class _SharedAllocator:
    """``alloc(shape, dtype)`` for ``collate_batch``: numpy views of new shared-memory tensors (remembered)."""

    def __init__(self):
        self.tensors = {}

    def __call__(self, shape, dtype):
        import torch
        tensor = torch.from_numpy(np.empty(0, dtype=dtype)).new_empty(shape).share_memory_()
        array = tensor.numpy()
        self.tensors[id(array)] = (array, tensor)
        return array


def collate_for_workers(collate_fn, batch_list):
    """``collate_fn(batch_list)`` (given shared-memory output arrays when it takes ``alloc``) with its large numeric
    numpy arrays wrapped in :class:`SharedArray`: written once, handed over without a copy."""
    import inspect

    import torch
    alloc = _SharedAllocator()
    takes_alloc = 'alloc' in inspect.signature(collate_fn).parameters
    batch = collate_fn(batch_list, alloc=alloc) if takes_alloc else collate_fn(batch_list)
    out = {}
    for key, val in batch.items():
        shared = alloc.tensors.get(id(val))
        if shared is not None and shared[0] is val:
            out[key] = SharedArray(shared[1])
        elif isinstance(val, np.ndarray) and val.dtype.kind in 'biuf' and val.nbytes >= _SHARED_MIN_BYTES:
            out[key] = SharedArray(torch.from_numpy(val))
        else:
            out[key] = val
    return out


class _NumpyBatches:
    """Iterator over a worker-backed DataLoader that unwraps :class:`SharedArray` values to numpy (zero-copy)."""

    def __init__(self, inner):
        self._inner = inner

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._inner)
        return {k: v.tensor.numpy() if isinstance(v, SharedArray) else v for k, v in batch.items()}

    def __len__(self):
        return len(self._inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@functools.lru_cache(maxsize=None)
def _dataloader_class():
    from torch.utils.data import DataLoader

    class SharedMemoryDataLoader(DataLoader):
        """DataLoader whose workers hand large batch arrays over in shared memory; batches are numpy as always."""

        def __iter__(self):
            inner = super().__iter__()
            return _NumpyBatches(inner) if self.num_workers > 0 else inner

    return SharedMemoryDataLoader


def build_dataloader(dataset_cfg, class_names, batch_size, dist, root_path=None, workers=4, seed=None,
                     logger=None, training=True, merge_all_iters_to_one_epoch=False, total_epochs=0):
    """Build ``(dataset, dataloader, sampler)`` as OpenPCDet does.

    With workers, the batch's large numpy arrays (points, voxels) come back through shared memory rather than a
    pipe (see :class:`SharedArray`); the batches are the same numpy dicts either way.

    Args:
        dataset_cfg: DATA_CONFIG (``DATASET`` names the class).
        class_names: list of class names.
        batch_size: per-process batch size.
        dist: use ``DistributedSampler`` (shuffled in training, in order for evaluation).
        root_path: overrides ``DATA_PATH``.
        workers: DataLoader worker processes (0 = load in the main process).
        seed: makes worker RNG streams reproducible (epoch-dependent), see :func:`worker_init_fn`.
        training: training mode (augmentation, CBGS, shuffling).
        merge_all_iters_to_one_epoch, total_epochs: OpenPCDet's single-long-epoch mode.
    """
    import torch
    from torch.utils.data import DistributedSampler

    dataset = get_dataset_class(dataset_cfg.DATASET)(dataset_cfg=dataset_cfg, class_names=class_names,
                                                     root_path=root_path, training=training, logger=logger)
    if merge_all_iters_to_one_epoch:
        dataset.merge_all_iters_to_one_epoch(merge=True, epochs=total_epochs)
    sampler = DistributedSampler(dataset, shuffle=training) if dist else None
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    collate = partial(collate_for_workers, dataset.collate_batch) if workers > 0 else dataset.collate_batch
    dataloader = _dataloader_class()(dataset, batch_size=batch_size, pin_memory=torch.cuda.is_available(),
                                     num_workers=workers, shuffle=(sampler is None) and training,
                                     collate_fn=collate, drop_last=False, sampler=sampler, timeout=0,
                                     worker_init_fn=partial(worker_init_fn, seed=seed) if workers > 0 else None,
                                     generator=generator)
    return dataset, dataloader, sampler
