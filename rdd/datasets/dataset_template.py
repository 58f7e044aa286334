"""OpenPCDet's ``DatasetTemplate`` roles: the per-sample pipeline (``prepare_data``) and the batch collate.

``prepare_data`` order (OpenPCDet's): augmentation (training only; boxes of classes outside ``class_names``
are kept for gt_sampling's collision check, then dropped) -> keep ``class_names`` boxes and append the 1-based
class index as the last column -> point feature encoding -> data processor (range mask, shuffle, voxels).
A training sample left without boxes is replaced by a random other sample, as in OpenPCDet.
"""
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch.utils.data as torch_data

from .augmentor import DataAugmentor
from .pickle_utils import LoggerFreePickleMixin
from .processor import DataProcessor, PointFeatureEncoder


def _concat_rows(arrays, alloc, batch_column=False):
    """Concatenate ``arrays`` (N_i, ...) along rows into one ``alloc``-ed array; with ``batch_column`` a first
    column holds the index i of the array each row came from (in the arrays' dtype), as OpenPCDet's ``np.pad``."""
    first = np.asarray(arrays[0])
    width = (first.shape[1] + 1,) if batch_column else first.shape[1:]
    out = alloc((sum(len(a) for a in arrays), *width), np.result_type(*arrays))
    row = 0
    for i, a in enumerate(arrays):
        if batch_column:
            out[row:row + len(a), 0] = i
            out[row:row + len(a), 1:] = a
        else:
            out[row:row + len(a)] = a
        row += len(a)
    return out


class EmptySampleError(ValueError):
    """A frame or a whole split holds nothing to train or evaluate on (the message names it)."""


class DatasetTemplate(LoggerFreePickleMixin, torch_data.Dataset):
    """Args: dataset_cfg (EasyDict, OpenPCDet DATA_CONFIG), class_names (list[str]), training (bool),
    root_path (Path), logger (logging.Logger or None)."""

    LOGGER_NAME = 'rdd.datasets'
    MAX_RESAMPLE = 100

    def __init__(self, dataset_cfg=None, class_names=None, training=True, root_path=None, logger=None):
        super().__init__()
        self.dataset_cfg = dataset_cfg
        self.training = training
        self.class_names = list(class_names) if class_names is not None else None
        self.logger = logger or logging.getLogger(self.LOGGER_NAME)
        self.root_path = Path(root_path) if root_path is not None else Path(dataset_cfg.DATA_PATH)
        self.total_epochs = 0
        self._merge_all_iters_to_one_epoch = False
        self.source_files = []  # the files the samples come from (info files), for error messages
        self._resample_depth = 0
        if dataset_cfg is None or class_names is None:
            return
        self.point_cloud_range = np.array(dataset_cfg.POINT_CLOUD_RANGE, dtype=np.float32)
        self.point_feature_encoder = PointFeatureEncoder(dataset_cfg.POINT_FEATURE_ENCODING,
                                                         point_cloud_range=self.point_cloud_range)
        self.data_augmentor = None
        if training:
            self.data_augmentor = DataAugmentor(self.root_path, dataset_cfg.DATA_AUGMENTOR, self.class_names,
                                                logger=self.logger)
        self.data_processor = DataProcessor(dataset_cfg.DATA_PROCESSOR, point_cloud_range=self.point_cloud_range,
                                            training=training,
                                            num_point_features=self.point_feature_encoder.num_point_features)
        self.grid_size = self.data_processor.grid_size
        self.voxel_size = self.data_processor.voxel_size
        self.depth_downsample_factor = None

    @property
    def mode(self):
        return 'train' if self.training else 'test'

    def merge_all_iters_to_one_epoch(self, merge=True, epochs=None):
        self._merge_all_iters_to_one_epoch = bool(merge)
        self.total_epochs = epochs if merge else 0

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError

    def prepare_data(self, data_dict):
        """Run augmentation, class filtering, encoding and processing on one sample.

        Args:
            data_dict: ``points (N, 3 + C_in)`` float32, optional ``gt_boxes (M, 7 + C)``, ``gt_names (M,)``,
                ``frame_id``, ``metadata``.
        Returns:
            the dict with ``points (N', C_out)``, ``gt_boxes (M', 7 + C + 1)`` (class index last),
            ``use_lead_xyz``, ``voxels``, ``voxel_coords``, ``voxel_num_points``; ``gt_names`` removed.
        """
        if self.training:
            if 'gt_boxes' not in data_dict:
                raise KeyError('prepare_data: gt_boxes must be provided for training')
            mask = np.array([n in self.class_names for n in data_dict['gt_names']], dtype=bool)
            data_dict = self.data_augmentor.forward({**data_dict, 'gt_boxes_mask': mask})

        if data_dict.get('gt_boxes', None) is not None:
            keep = np.array([n in self.class_names for n in data_dict['gt_names']], dtype=bool)
            boxes = data_dict['gt_boxes'][keep]
            names = data_dict['gt_names'][keep]
            cls = np.array([self.class_names.index(n) + 1 for n in names], dtype=np.float32).reshape(-1, 1)
            data_dict['gt_boxes'] = np.concatenate([boxes.astype(np.float32), cls], axis=1)
            data_dict['gt_names'] = names

        data_dict = self.point_feature_encoder.forward(data_dict)
        data_dict = self.data_processor.forward(data_dict)

        if len(data_dict['points']) == 0 or len(data_dict.get('voxels', (None,))) == 0:
            frame = f"frame {data_dict.get('frame_id')} ({data_dict.get('metadata')})"
            msg = (f'{frame} has no point inside POINT_CLOUD_RANGE {self.point_cloud_range.tolist()} '
                   f'(an empty or misplaced point cloud)')
            if not self.training:
                raise EmptySampleError(f'{msg}; remove it from {self.source_files or "the info file"}')
            self.logger.warning('%s: skipped, replaced by a random other sample', msg)
            return self._replacement(f'no point inside POINT_CLOUD_RANGE (last: {frame})')
        if self.training and len(data_dict['gt_boxes']) == 0:
            return self._replacement('no box of CLASS_NAMES left after augmentation and range filtering')
        data_dict.pop('gt_names', None)
        return data_dict

    def _replacement(self, reason):
        """A random other sample (OpenPCDet's replacement); EmptySampleError after MAX_RESAMPLE in a row."""
        if self._resample_depth >= self.MAX_RESAMPLE:
            raise EmptySampleError(f'{self.mode} split {self.source_files or type(self).__name__}: '
                                   f'{self.MAX_RESAMPLE} random samples in a row had {reason}; check CLASS_NAMES, '
                                   f'POINT_CLOUD_RANGE, FILTER_MIN_POINTS_IN_GT and the point files')
        self._resample_depth += 1
        try:
            return self.__getitem__(np.random.randint(self.__len__()))
        finally:
            self._resample_depth -= 1

    @staticmethod
    def collate_batch(batch_list, _unused=False, alloc=np.empty):
        """Stack per-sample dicts into OpenPCDet's batch_dict (numpy; the engine moves it to tensors).

        ``voxels``/``voxel_num_points`` are concatenated, ``points``/``voxel_coords`` get the batch index as a
        new first column, ``gt_boxes`` are zero-padded to ``(B, M_max, 7 + C + 1)`` (``M_max >= 1``),
        ``frame_id`` is stacked to an array of str, ``metadata`` stays a list of dicts. The four large arrays are
        written once into arrays from ``alloc(shape, dtype)`` (DataLoader workers pass shared memory).
        """
        data = defaultdict(list)
        for sample in batch_list:
            for key, val in sample.items():
                data[key].append(val)
        batch_size = len(batch_list)
        ret = {}
        for key, val in data.items():
            try:
                if key in ('voxels', 'voxel_num_points'):
                    ret[key] = _concat_rows(val, alloc)
                elif key in ('points', 'voxel_coords'):
                    ret[key] = _concat_rows(val, alloc, batch_column=True)
                elif key == 'gt_boxes':
                    max_gt = max(max(len(v) for v in val), 1)
                    out = np.zeros((batch_size, max_gt, val[0].shape[-1]), dtype=np.float32)
                    for k, v in enumerate(val):
                        out[k, :len(v)] = v
                    ret[key] = out
                elif key == 'metadata':
                    ret[key] = list(val)
                else:
                    ret[key] = np.stack(val, axis=0)
            except Exception as err:
                raise TypeError(f'collate_batch: cannot batch key {key!r}: {err}') from err
        ret['batch_size'] = batch_size
        return ret

    @staticmethod
    def generate_prediction_dicts(batch_dict, pred_dicts, class_names, output_path=None):
        """Model outputs -> OpenPCDet det_annos.

        Args:
            batch_dict: with ``frame_id`` and ``metadata`` per sample.
            pred_dicts: per sample ``pred_boxes (N, 7 or 9)``, ``pred_scores (N,)``, ``pred_labels (N,)``
                (1-based, tensors or arrays).
            class_names: list of names indexed by ``pred_labels - 1``.
            output_path: unused here (kept for OpenPCDet's signature).
        Returns:
            list of dicts ``name (N,)``, ``score (N,)``, ``boxes_lidar (N, 7 or 9)``, ``pred_labels (N,)``,
            ``frame_id``, ``metadata``.
        """
        def to_np(x):
            return x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)

        annos = []
        for i, box_dict in enumerate(pred_dicts):
            scores, boxes = to_np(box_dict['pred_scores']), to_np(box_dict['pred_boxes'])
            labels = to_np(box_dict['pred_labels']).astype(np.int64)
            if len(scores):
                if labels.min() < 1 or labels.max() > len(class_names):
                    raise ValueError(f'pred_labels must be 1-based indices into {len(class_names)} class names, '
                                     f'got range [{labels.min()}, {labels.max()}]')
                names = np.array(class_names)[labels - 1]
            else:
                names = np.zeros(0, dtype='<U1')
            anno = {'name': names, 'score': scores, 'boxes_lidar': boxes.reshape(len(scores), -1) if len(scores)
                    else np.zeros((0, boxes.shape[-1] if boxes.ndim == 2 else 7)), 'pred_labels': labels,
                    'frame_id': batch_dict['frame_id'][i], 'metadata': batch_dict['metadata'][i]}
            annos.append(anno)
        return annos
