"""Datasets: registry, ``build_dataloader`` (OpenPCDet's signature), nuScenes dataset and evaluation.

``DATASETS`` (:mod:`rdd.datasets.registry`) maps ``DATA_CONFIG.DATASET`` names to dataset classes; importing this
package registers ``NuScenesDataset``. A dataset class must follow OpenPCDet's contract:

* ``__init__(dataset_cfg, class_names, training=True, root_path=None, logger=None)``;
* ``__len__``, ``__getitem__(i) -> dict`` of numpy arrays (``points``, ``voxels``, ``voxel_coords`` ``[z, y, x]``,
  ``voxel_num_points``, ``gt_boxes (M, 7 + C + 1)`` with the 1-based class last, ``frame_id``, ``metadata``);
* ``collate_batch(list) -> batch_dict`` (static), ``generate_prediction_dicts(batch_dict, pred_dicts,
  class_names, output_path=None)`` (static), ``evaluation(det_annos, class_names, output_path=None) ->
  (result_str, result_dict)``;
* attributes ``point_cloud_range``, ``grid_size``, ``voxel_size``, ``point_feature_encoder``, ``class_names``,
  ``merge_all_iters_to_one_epoch(merge, epochs)``.
* optional ``check_evaluation_inputs()``: raises when ``evaluation`` would fail or score wrongly (bad devkit
  tables, infos covering part of the split); ``tools/test.py`` calls it before inference.
"""
from functools import partial

from . import nuscenes_dataset  # noqa: F401  (registers NuScenesDataset)
from .registry import DATASETS
from .shared_memory import collate_for_workers, shared_memory_dataloader_class

__all__ = ['DATASETS', 'build_dataloader', 'worker_init_fn']


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


def build_dataloader(dataset_cfg, class_names, batch_size, dist, root_path=None, workers=4, seed=None,
                     logger=None, training=True, merge_all_iters_to_one_epoch=False, total_epochs=0):
    """Build ``(dataset, dataloader, sampler)`` as OpenPCDet does.

    With workers, the batch's large numpy arrays (points, voxels) come back through shared memory rather than a
    pipe (see :mod:`rdd.datasets.shared_memory`); the batches are the same numpy dicts either way.

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

    dataset = DATASETS.get(dataset_cfg.DATASET)(dataset_cfg=dataset_cfg, class_names=class_names,
                                                root_path=root_path, training=training, logger=logger)
    if merge_all_iters_to_one_epoch:
        dataset.merge_all_iters_to_one_epoch(merge=True, epochs=total_epochs)
    sampler = DistributedSampler(dataset, shuffle=training) if dist else None
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    collate = partial(collate_for_workers, dataset.collate_batch) if workers > 0 else dataset.collate_batch
    dataloader = shared_memory_dataloader_class()(dataset, batch_size=batch_size, pin_memory=torch.cuda.is_available(),
                                     num_workers=workers, shuffle=(sampler is None) and training,
                                     collate_fn=collate, drop_last=False, sampler=sampler, timeout=0,
                                     worker_init_fn=partial(worker_init_fn, seed=seed) if workers > 0 else None,
                                     generator=generator)
    return dataset, dataloader, sampler
