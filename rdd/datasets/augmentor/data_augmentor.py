"""OpenPCDet's ``DataAugmentor``: runs ``DATA_AUGMENTOR.AUG_CONFIG_LIST`` in order on a training sample.

Supported ``NAME``s (OpenPCDet's nuScenes CenterPoint set): ``gt_sampling``, ``random_world_flip``
(``ALONG_AXIS_LIST`` of 'x'/'y'), ``random_world_rotation`` (``WORLD_ROT_ANGLE`` [min, max] rad or a scalar
meaning ±), ``random_world_scaling`` (``WORLD_SCALE_RANGE``), ``random_world_translation``
(``NOISE_TRANSLATE_STD`` per-axis std in metres, OpenPCDet's newer key, or ``WORLD_TRANSLATION_RANGE`` +
``ALONG_AXIS_LIST``, its older key). Names in ``DISABLE_AUG_LIST`` are skipped. Unknown names are an error.

The world transforms (flip, rotation, scaling, translation) move the boxes at once and compose their point
transforms into ``data_dict['world_transform']`` (4 x 4); the points are moved once, with the composed transform,
before the next non-world step (gt_sampling) and at the end of :meth:`DataAugmentor.forward`. Each augmentation
draws the same random numbers, in the same order, as when it moved the points itself.
"""
import logging
from functools import partial

import numpy as np

from ..pickle_utils import LoggerFreePickleMixin
from . import augmentor_utils
from .database_sampler import DataBaseSampler


class DataAugmentor(LoggerFreePickleMixin):
    """Args: root_path (Path), augmentor_configs (DATA_AUGMENTOR dict or plain list), class_names, logger."""

    SUPPORTED = ('gt_sampling', 'random_world_flip', 'random_world_rotation', 'random_world_scaling',
                 'random_world_translation')
    WORLD_TRANSFORMS = ('random_world_flip', 'random_world_rotation', 'random_world_scaling',
                        'random_world_translation')
    LOGGER_NAME = __name__

    def __init__(self, root_path, augmentor_configs, class_names, logger=None):
        self.root_path = root_path
        self.class_names = class_names
        self.logger = logger or logging.getLogger(self.LOGGER_NAME)
        if isinstance(augmentor_configs, list):
            cfg_list, disabled = augmentor_configs, []
        else:
            cfg_list = augmentor_configs.get('AUG_CONFIG_LIST', [])
            disabled = augmentor_configs.get('DISABLE_AUG_LIST', [])
        self.data_augmentor_queue = []
        for cur_cfg in cfg_list:
            name = cur_cfg['NAME']
            if name in disabled:
                continue
            if name not in self.SUPPORTED:
                raise ValueError(f'DATA_AUGMENTOR: unknown augmentation NAME {name!r}; supported: {self.SUPPORTED}')
            self.data_augmentor_queue.append(getattr(self, name)(config=cur_cfg))

    def gt_sampling(self, config=None):
        return DataBaseSampler(self.root_path, config, self.class_names, logger=self.logger)

    @staticmethod
    def _compose(data_dict, matrix):
        """Record ``matrix`` (4, 4) as applied after the world transforms pending in ``data_dict``."""
        pending = data_dict.get('world_transform')
        data_dict['world_transform'] = matrix if pending is None else matrix @ pending
        return data_dict

    def random_world_flip(self, data_dict=None, config=None):
        if data_dict is None:
            for axis in config['ALONG_AXIS_LIST']:
                if axis not in ('x', 'y'):
                    raise ValueError(f'random_world_flip: ALONG_AXIS_LIST entry {axis!r} must be x or y')
            return partial(self.random_world_flip, config=config)
        for axis in config['ALONG_AXIS_LIST']:
            if np.random.choice([False, True], replace=False, p=[0.5, 0.5]):
                fn = augmentor_utils.flip_along_x if axis == 'x' else augmentor_utils.flip_along_y
                self._compose(data_dict, fn(data_dict['gt_boxes']))
        return data_dict

    def random_world_rotation(self, data_dict=None, config=None):
        if data_dict is None:
            return partial(self.random_world_rotation, config=config)
        rot_range = config['WORLD_ROT_ANGLE']
        if not isinstance(rot_range, (list, tuple)):
            rot_range = [-rot_range, rot_range]
        angle = np.random.uniform(rot_range[0], rot_range[1])
        return self._compose(data_dict, augmentor_utils.global_rotation(data_dict['gt_boxes'], angle))

    def random_world_scaling(self, data_dict=None, config=None):
        if data_dict is None:
            return partial(self.random_world_scaling, config=config)
        lo, hi = config['WORLD_SCALE_RANGE']
        if hi - lo < 1e-3:
            return data_dict
        scale = np.random.uniform(lo, hi)
        return self._compose(data_dict, augmentor_utils.global_scaling(data_dict['gt_boxes'], scale))

    def random_world_translation(self, data_dict=None, config=None):
        if data_dict is None:
            if 'NOISE_TRANSLATE_STD' not in config and 'WORLD_TRANSLATION_RANGE' not in config:
                raise ValueError('random_world_translation needs NOISE_TRANSLATE_STD or WORLD_TRANSLATION_RANGE')
            return partial(self.random_world_translation, config=config)
        if 'NOISE_TRANSLATE_STD' in config:
            std = config['NOISE_TRANSLATE_STD']
            std = np.asarray([std] * 3 if np.isscalar(std) else std, dtype=np.float64)
            offset = np.random.normal(0.0, 1.0, 3) * std
        else:
            lo, hi = config['WORLD_TRANSLATION_RANGE']
            offset = np.zeros(3)
            for axis in config.get('ALONG_AXIS_LIST', ['x', 'y', 'z']):
                offset['xyz'.index(axis)] = np.random.uniform(lo, hi)
        return self._compose(data_dict, augmentor_utils.global_translation(data_dict['gt_boxes'], offset))

    @staticmethod
    def apply_world_transform(data_dict):
        """Move the points by the pending composed world transform (if any) and clear it; returns the dict."""
        matrix = data_dict.pop('world_transform', None)
        if matrix is not None:
            augmentor_utils.transform_points(data_dict['points'], matrix)
        return data_dict

    def forward(self, data_dict):
        """Apply the queue to ``data_dict`` (``points (N, 3+C)``, ``gt_boxes (M, 7+C)``, ``gt_names (M,)``,
        optional ``gt_boxes_mask (M,)``); wraps headings into [-pi, pi) and drops masked boxes."""
        for aug in self.data_augmentor_queue:
            if not isinstance(aug, partial) or aug.func.__name__ not in self.WORLD_TRANSFORMS:
                self.apply_world_transform(data_dict)  # e.g. gt_sampling needs the points where the boxes are
            data_dict = aug(data_dict=data_dict)
        self.apply_world_transform(data_dict)
        data_dict['gt_boxes'][:, 6] = augmentor_utils.limit_period(data_dict['gt_boxes'][:, 6], 0.5, 2 * np.pi)
        mask = data_dict.pop('gt_boxes_mask', None)
        if mask is not None:
            data_dict['gt_boxes'] = data_dict['gt_boxes'][mask]
            data_dict['gt_names'] = data_dict['gt_names'][mask]
        return data_dict
