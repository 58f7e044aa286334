"""nuScenes LiDAR dataset over OpenPCDet info files (``nuscenes_infos_10sweeps_{train,val}.pkl``).

Reading follows OpenPCDet: the key frame's ``.pcd.bin`` (x, y, z, intensity, ring) gives ``x, y, z, intensity``
with time lag 0; ``MAX_SWEEPS - 1`` sweeps are drawn from ``info['sweeps']`` with ``np.random.choice(...,
replace=False)`` (all of them, in random order, for OpenPCDet's 10-sweep infos), each with the points within
1 m of the sensor in x and y removed, moved into the key-frame LiDAR frame with its ``transform_matrix``
(``None`` = already there) and given its ``time_lag`` (s) as the 5th channel (:mod:`rdd.datasets.lidar_points`,
which also drops non-finite points with a warning naming the file).

Bad data names itself: a training split in which no sample has a box of ``CLASS_NAMES`` (with at least
``FILTER_MIN_POINTS_IN_GT`` points) is an error naming the info files; for empty frames see
:class:`~rdd.datasets.dataset_template.DatasetTemplate`.

Paths: ``DATA_PATH`` (relative paths resolve against the repository root, never the CWD; ``root_path``
overrides it) ``/ VERSION`` is the version root that ``INFO_PATH``, info ``lidar_path``s and gt_sampling paths are
relative to. ``SPLIT_FILE`` (optional) names a custom scene-split file (devkit format ``{"split name": [scene
names]}``) used by the evaluation; by default the devkit's official splits for an official ``VERSION`` and
``<version root>/<VERSION>/splits.json`` for a custom one (:mod:`rdd.datasets.nuscenes_splits`, the rule info
creation follows too). The version root is the devkit's ``dataroot`` (OpenPCDet's).
"""
from pathlib import Path

import numpy as np

from rdd.config import ROOT_DIR, resolve_path

from .dataset_template import DatasetTemplate, EmptySampleError
from .lidar_points import load_lidar_with_sweeps
from .nuscenes_eval import check_evaluation_inputs, evaluate_det_annos
from .nuscenes_splits import split_file_for
from .pickle_utils import load_pickle
from .registry import DATASETS

NUSCENES_DETECTION_NAMES = ('car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle',
                            'bicycle', 'pedestrian', 'traffic_cone')


def resolve_data_path(data_path, root_path=None):
    """``root_path`` if given, else ``DATA_PATH`` (relative to the repository root when relative)."""
    if root_path is not None:
        return Path(root_path).expanduser()
    return resolve_path(data_path, [ROOT_DIR])


def check_infos_class_names(infos, class_names, path):
    """Raise if the infos at ``path`` use a label vocabulary other than ``class_names`` (+ nuScenes names)."""
    names = set()
    for info in infos:
        names.update(str(n) for n in info.get('gt_names', []))
    if not names:
        return
    known = set(class_names) | set(NUSCENES_DETECTION_NAMES) | {'ignore'}
    unknown = sorted(names - known)
    if unknown or not (names & set(class_names)):
        raise ValueError(f'Info file {path} was made for a different class list: its gt_names {sorted(names)} '
                         f'(unknown: {unknown}) do not match CLASS_NAMES {list(class_names)}')


@DATASETS.register()
class NuScenesDataset(DatasetTemplate):
    """OpenPCDet-compatible nuScenes dataset. Args as :class:`DatasetTemplate`; ``root_path`` overrides
    ``DATA_PATH``."""

    def __init__(self, dataset_cfg, class_names, training=True, root_path=None, logger=None):
        data_root = resolve_data_path(dataset_cfg.DATA_PATH, root_path)
        super().__init__(dataset_cfg=dataset_cfg, class_names=class_names, training=training,
                         root_path=data_root / dataset_cfg.VERSION, logger=logger)
        self.data_root = data_root
        self.infos = []
        self.include_nuscenes_data(self.mode)
        if self.training:
            self.check_trainable()
        if self.training and dataset_cfg.get('BALANCED_RESAMPLING', False):
            self.infos = self.balanced_infos_resampling(self.infos)

    # ------------------------------------------------------------------ infos
    def include_nuscenes_data(self, mode):
        info_paths = self.dataset_cfg.INFO_PATH.get(mode)
        if not info_paths:
            raise KeyError(f'DATA_CONFIG.INFO_PATH has no entry for mode {mode!r}')
        for rel in info_paths:
            path = self.root_path / rel
            infos = load_pickle(path, f'nuScenes info file (DATA_CONFIG.INFO_PATH.{mode})')
            if not isinstance(infos, list) or (infos and not isinstance(infos[0], dict)):
                raise ValueError(f'nuScenes info file {path} must hold a list of dicts (OpenPCDet schema)')
            for key in ('lidar_path', 'token', 'sweeps'):
                if infos and key not in infos[0]:
                    raise ValueError(f'nuScenes info file {path}: entries lack the key {key!r}')
            check_infos_class_names(infos, self.class_names, path)
            self.infos.extend(infos)
            self.source_files.append(str(path))
            self.logger.info('Loaded %d nuScenes samples from %s', len(infos), path)

    def gt_mask(self, info):
        """Boxes of ``info`` kept for this dataset: all, or those with at least ``FILTER_MIN_POINTS_IN_GT`` LiDAR
        points (bool array, or ``slice(None)``)."""
        min_pts = self.dataset_cfg.get('FILTER_MIN_POINTS_IN_GT', False)
        return np.asarray(info['num_lidar_pts']) > min_pts - 1 if min_pts else slice(None)

    def check_trainable(self):
        """Raise EmptySampleError naming the info files when no sample has a box of CLASS_NAMES to train on."""
        wanted = set(self.class_names)
        for info in self.infos:
            names = np.asarray(info.get('gt_names', []))
            if len(names) and wanted.intersection(names[self.gt_mask(info)].tolist()):
                return
        min_pts = self.dataset_cfg.get('FILTER_MIN_POINTS_IN_GT', False)
        raise EmptySampleError(
            f'training split {self.source_files or "(no INFO_PATH files)"}: none of its {len(self.infos)} samples '
            f'has a box of CLASS_NAMES {self.class_names}' + (f' with at least FILTER_MIN_POINTS_IN_GT={min_pts} '
                                                              f'LiDAR points' if min_pts else '')
            + ' -- wrong info file, class list or FILTER_MIN_POINTS_IN_GT?')

    def balanced_infos_resampling(self, infos):
        """Class-balanced grouping and sampling (CBGS, arXiv 1908.09492), OpenPCDet's version.

        For each class ``c`` with ``n_c`` samples containing it, draw ``int(n_c * (1/K) / (n_c / sum_k n_k))``
        of those samples with replacement, so every class ends up in about ``sum_k n_k / K`` drawn samples.
        Classes absent from the infos are skipped with a warning (OpenPCDet divides by zero there); if nothing is
        drawn at all (tiny info sets), the infos are kept unchanged with a warning.
        """
        cls_infos = {name: [] for name in self.class_names}
        for info in infos:
            for name in set(info.get('gt_names', [])):
                if name in cls_infos:
                    cls_infos[name].append(info)
        total = sum(len(v) for v in cls_infos.values())
        if total == 0:
            self.logger.warning('BALANCED_RESAMPLING: no sample holds any of CLASS_NAMES; resampling skipped')
            return infos
        frac = 1.0 / len(self.class_names)
        sampled = []
        for name, cur in cls_infos.items():
            if not cur:
                self.logger.warning('BALANCED_RESAMPLING: class %s has no samples', name)
                continue
            ratio = frac / (len(cur) / total)
            idx = np.random.choice(len(cur), int(len(cur) * ratio))
            sampled.extend(cur[i] for i in idx)
        if not sampled:  # every class had fewer than ~K samples; OpenPCDet would train on nothing
            self.logger.warning('BALANCED_RESAMPLING produced no samples (too few infos); using the infos as they are')
            return infos
        self.logger.info('Total samples after balanced resampling: %d', len(sampled))
        return sampled

    # ------------------------------------------------------------------ points
    def get_lidar_with_sweeps(self, index, max_sweeps=1):
        """Key frame + ``max_sweeps - 1`` sweeps -> ``(N, 5)`` float32 ``x, y, z, intensity, time_lag``."""
        info = self.infos[index]
        n = min(max_sweeps - 1, len(info['sweeps']))
        sweeps = [info['sweeps'][k] for k in np.random.choice(len(info['sweeps']), n, replace=False)]
        return load_lidar_with_sweeps(self.root_path / info['lidar_path'], sweeps, self.root_path, self.logger)

    # ------------------------------------------------------------------ samples
    def __len__(self):
        if self._merge_all_iters_to_one_epoch:
            return len(self.infos) * self.total_epochs
        return len(self.infos)

    def __getitem__(self, index):
        if self._merge_all_iters_to_one_epoch:
            index = index % len(self.infos)
        info = self.infos[index]  # read only: every array taken from it below is a copy
        points = self.get_lidar_with_sweeps(index, max_sweeps=self.dataset_cfg.MAX_SWEEPS)
        input_dict = {'points': points, 'frame_id': Path(info['lidar_path']).stem,
                      'metadata': {'token': info['token']}}
        if 'gt_boxes' in info:
            mask = self.gt_mask(info)
            input_dict['gt_names'] = np.array(info['gt_names'])[mask]
            input_dict['gt_boxes'] = np.array(info['gt_boxes'], dtype=np.float64)[mask]
        data_dict = self.prepare_data(input_dict)
        if 'gt_boxes' in data_dict:
            if self.dataset_cfg.get('SET_NAN_VELOCITY_TO_ZEROS', False):
                data_dict['gt_boxes'][np.isnan(data_dict['gt_boxes'])] = 0
            if not self.dataset_cfg.get('PRED_VELOCITY', True):
                data_dict['gt_boxes'] = data_dict['gt_boxes'][:, [0, 1, 2, 3, 4, 5, 6, -1]]
        return data_dict

    # ------------------------------------------------------------------ evaluation
    def split_file(self):
        """Custom scene-split file for evaluation, or None for the devkit's official splits.

        ``SPLIT_FILE`` if set (relative paths resolve against the repository root); else
        :func:`rdd.datasets.nuscenes_splits.split_file_for`: None for an official ``VERSION`` (a ``splits.json``
        in its folder is ignored, as at info creation), ``<version root>/<VERSION>/splits.json`` for a custom one.
        """
        cfg_path = self.dataset_cfg.get('SPLIT_FILE', None)
        if cfg_path:
            path = resolve_path(cfg_path, [ROOT_DIR])
            if not path.is_file():
                raise FileNotFoundError(f'DATA_CONFIG.SPLIT_FILE not found: {path}')
            cfg_path = str(path)
        return split_file_for(self.root_path, self.dataset_cfg.VERSION, cfg_path or None)

    def check_evaluation_inputs(self):
        """Raise before inference when :meth:`evaluation` would fail or score wrongly: a devkit table that cannot
        be loaded (DevkitTableError naming the file), a split that does not resolve, or infos that cover only
        part of the evaluation split (PartialEvaluationError). See
        :func:`rdd.datasets.nuscenes_eval.check_evaluation_inputs`."""
        split = self.dataset_cfg.get('DATA_SPLIT', {}).get(self.mode, 'val')
        paths = [str(self.root_path / p) for p in self.dataset_cfg.INFO_PATH.get(self.mode, [])]
        check_evaluation_inputs([info['token'] for info in self.infos], self.root_path, self.dataset_cfg.VERSION,
                                split, self.split_file(), what=f'the info files {paths}')

    def evaluation(self, det_annos, class_names, output_path=None, **kwargs):
        """Score ``det_annos`` with the nuScenes devkit; returns ``(result_str, result_dict)``.

        See :func:`rdd.datasets.nuscenes_eval.evaluate_det_annos`. The split is ``DATA_SPLIT[mode]``
        ('val' by default; mapped to 'mini_val' for v1.0-mini when no custom split file applies).
        """
        split = self.dataset_cfg.get('DATA_SPLIT', {}).get(self.mode, 'val')
        return evaluate_det_annos(det_annos, class_names, data_root=self.root_path, version=self.dataset_cfg.VERSION,
                                  split=split, split_file=self.split_file(), output_path=output_path,
                                  logger=self.logger)
