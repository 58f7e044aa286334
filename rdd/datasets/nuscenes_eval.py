"""nuScenes evaluation of OpenPCDet ``det_annos`` with the official devkit (``detection_cvpr_2019``).

Pipeline: per sample, LiDAR-frame boxes ``(N, 7 or 9)`` -> global frame via the key frame's LIDAR_TOP
``calibrated_sensor`` (LiDAR -> ego) and ``ego_pose`` (ego -> global): centre ``R_e (R_s c + t_s) + t_e``,
orientation ``q_e * q_s * q_z(yaw)``, velocity ``R_e R_s [vx, vy, 0]`` (non-finite -> 0) -> at most 500 boxes
per sample (highest scores) -> one attribute per box by OpenPCDet's speed heuristic -> ``results_nusc.json``
covering exactly the split's samples (empty lists where nothing was predicted) -> devkit ``DetectionEval``.

Splits. Official splits ('val' -> 'mini_val' on v1.0-mini, 'train', ...) go to ``DetectionEval`` unchanged.
Custom scene splits (a ``splits.json`` ``{"split": [scene names]}``, e.g. the synthetic data's) use
:class:`SampleTokensDetectionEval`, a subclass whose only change is that it loads GT and predictions for an
explicit list of sample tokens with the devkit's own ``load_gt_of_sample_tokens`` /
``load_prediction_of_sample_tokens``. We subclass rather than patch ``create_splits_scenes`` because the devkit
treats names like 'val' as official (so a custom 'val' cannot go through its own custom-split lookup), the split
file may live outside ``<dataroot>/<version>/``, and a subclass leaves no global state behind. Filtering,
matching and metrics are the devkit's code.

Coverage. Predictions must cover every sample of the split (a sample with an empty prediction list counts as
covered): predictions or info files that cover only part of it are refused (PartialEvaluationError, see
:func:`rdd.datasets.nuscenes_splits.check_split_coverage`), never scored as if the missing samples had no
detections. :func:`check_evaluation_inputs` checks the info files' coverage and the devkit tables before
inference.

When no sample of the split has any prediction the devkit crashes; we then return mAP = NDS = 0 and TP errors
of 1 with a warning (``results_nusc.json`` is still written).
"""
import json
import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .nuscenes_splits import check_split_coverage, split_sample_tokens
from .nuscenes_tables import check_devkit_tables, load_nuscenes

MAX_BOXES_PER_SAMPLE = 500
ERR_NAMES = {'trans_err': 'mATE', 'scale_err': 'mASE', 'orient_err': 'mAOE', 'vel_err': 'mAVE', 'attr_err': 'mAAE'}
# Attribute used when the speed rule gives none: the most frequent one of the class in nuScenes train
# (OpenPCDet's cls_attr_dist argmax); classes without attributes get ''.
DEFAULT_ATTRIBUTE = {'car': 'vehicle.parked', 'truck': 'vehicle.parked', 'construction_vehicle': 'vehicle.parked',
                     'bus': 'vehicle.moving', 'trailer': 'vehicle.parked', 'barrier': '', 'traffic_cone': '',
                     'motorcycle': 'cycle.without_rider', 'bicycle': 'cycle.without_rider',
                     'pedestrian': 'pedestrian.moving'}
_NUSC_CACHE = {}


def speed_attribute(name, speed):
    """OpenPCDet's attribute heuristic for a box of class ``name`` moving at ``speed`` m/s."""
    if speed > 0.2:
        if name in ('car', 'construction_vehicle', 'bus', 'truck', 'trailer'):
            return 'vehicle.moving'
        if name in ('bicycle', 'motorcycle'):
            return 'cycle.with_rider'
    else:
        if name == 'pedestrian':
            return 'pedestrian.standing'
        if name == 'bus':
            return 'vehicle.stopped'
    return DEFAULT_ATTRIBUTE.get(name, '')


def _quat_mul(a, b):
    """Hamilton product of quaternions ``(..., 4)`` in (w, x, y, z) order."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def lidar_boxes_to_global(boxes, cs_record, pose_record):
    """LiDAR-frame boxes ``(N, 7 or 9)`` -> global ``(centres (N, 3), quaternions (N, 4) wxyz, velocities (N, 2))``."""
    from pyquaternion import Quaternion
    q_s, q_e = Quaternion(cs_record['rotation']), Quaternion(pose_record['rotation'])
    rot = q_e.rotation_matrix @ q_s.rotation_matrix
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) == 0:
        return np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 2))
    boxes = boxes.reshape(len(boxes), -1)
    centres = (boxes[:, :3] @ rot.T) + (q_e.rotation_matrix @ np.asarray(cs_record['translation'])
                                        + np.asarray(pose_record['translation']))
    half = boxes[:, 6] / 2
    q_yaw = np.stack([np.cos(half), np.zeros_like(half), np.zeros_like(half), np.sin(half)], axis=-1)
    quats = _quat_mul(np.asarray((q_e * q_s).elements)[None], q_yaw)
    vel = np.zeros((len(boxes), 3))
    if boxes.shape[1] >= 9:
        vel[:, :2] = np.nan_to_num(boxes[:, 7:9], nan=0.0, posinf=0.0, neginf=0.0)
    return centres, quats, (vel @ rot.T)[:, :2]


def det_annos_to_nusc_results(det_annos, nusc, sample_tokens=None):
    """OpenPCDet det_annos -> nuScenes results dict ``{sample_token: [box dicts]}``.

    Args:
        det_annos: list of dicts with ``name (N,)``, ``score (N,)``, ``boxes_lidar (N, 7 or 9)``,
            ``metadata['token']``.
        nusc: a ``NuScenes`` instance.
        sample_tokens: if given, the result covers exactly these samples (empty lists where absent) and a
            prediction for another sample is an error.
    Returns:
        ``{token: [{'sample_token', 'translation', 'size' (w, l, h), 'rotation' (w, x, y, z), 'velocity' (2,),
        'detection_name', 'detection_score', 'attribute_name'}]}``, at most 500 (highest-score) boxes per sample;
        a sample listed twice in ``det_annos`` keeps its last entry.
    """
    results = {}
    for det in det_annos:
        token = det['metadata']['token']
        boxes = np.asarray(det['boxes_lidar'])
        scores = np.asarray(det['score'], dtype=np.float64)
        names = np.asarray(det['name'])
        order = np.argsort(-scores, kind='stable')[:MAX_BOXES_PER_SAMPLE]
        boxes, scores, names = boxes[order], scores[order], names[order]
        try:
            sample = nusc.get('sample', token)
        except KeyError:
            raise KeyError(f'det_annos sample token {token!r} is not a sample of {nusc.version} at {nusc.dataroot}') \
                from None
        bad = sorted(set(map(str, names)) - set(DEFAULT_ATTRIBUTE))
        if bad:
            raise ValueError(f'det_annos of sample {token} hold class names {bad} that are not nuScenes detection '
                             f'classes {sorted(DEFAULT_ATTRIBUTE)}')
        sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
        centres, quats, vels = lidar_boxes_to_global(
            boxes, nusc.get('calibrated_sensor', sd['calibrated_sensor_token']), nusc.get('ego_pose', sd['ego_pose_token']))
        annos = []
        for k in range(len(boxes)):
            name = str(names[k])
            annos.append({'sample_token': token, 'translation': centres[k].tolist(),
                          'size': [float(boxes[k, 4]), float(boxes[k, 3]), float(boxes[k, 5])],  # w, l, h
                          'rotation': quats[k].tolist(), 'velocity': vels[k].tolist(), 'detection_name': name,
                          'detection_score': float(scores[k]),
                          'attribute_name': speed_attribute(name, float(np.hypot(*vels[k])))})
        results[token] = annos  # a repeated sample (distributed padding) replaces, as in OpenPCDet
    if sample_tokens is not None:
        wanted = set(sample_tokens)
        extra = [t for t in results if t not in wanted]
        if extra:
            raise ValueError(f'{len(extra)} predicted samples are not in the evaluation split (e.g. {extra[0]}); '
                             f'are the info file and the split the same?')
        results = {t: results.get(t, []) for t in sample_tokens}
    return results


def get_nusc(data_root, version, verbose=False):
    """A cached ``NuScenes(version, data_root)`` (loading the tables is slow on trainval); a table that cannot be
    loaded is a DevkitTableError naming the file (:func:`rdd.datasets.nuscenes_tables.load_nuscenes`)."""
    key = (str(Path(data_root).resolve()), version)
    if key not in _NUSC_CACHE:
        _NUSC_CACHE.clear()
        _NUSC_CACHE[key] = load_nuscenes(data_root, version, verbose=verbose)
    return _NUSC_CACHE[key]


def check_evaluation_inputs(sample_tokens, data_root, version, split='val', split_file=None, what='the infos'):
    """Before inference: the devkit tables of ``<data_root>/<version>`` load (DevkitTableError naming the file
    otherwise), the split resolves, and ``sample_tokens`` (the samples that will be predicted) cover the whole
    evaluation split (PartialEvaluationError otherwise). Reads each table once and keeps only ``scene`` / ``sample``
    (a few seconds on v1.0-mini sizes, tens of seconds on v1.0-trainval: small next to inference)."""
    tables = check_devkit_tables(data_root, version)
    if version.endswith('test') and split_file is None:
        return
    view = SimpleNamespace(version=version, dataroot=str(data_root), scene=tables['scene'], sample=tables['sample'])
    eval_set, split_tokens, _ = split_sample_tokens(view, split, split_file)
    check_split_coverage(sample_tokens, split_tokens, eval_set, what)


def _sample_tokens_eval_class():
    from nuscenes.eval.common.loaders import (add_center_dist, filter_eval_boxes, load_gt_of_sample_tokens,
                                              load_prediction_of_sample_tokens)
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.evaluate import DetectionEval

    class SampleTokensDetectionEval(DetectionEval):
        """``DetectionEval`` on an explicit list of sample tokens (custom splits); see the module docstring."""

        def __init__(self, nusc, config, result_path, sample_tokens, output_dir, verbose=True, eval_set='custom'):
            self.nusc, self.result_path, self.eval_set = nusc, result_path, eval_set
            self.output_dir, self.verbose, self.cfg = output_dir, verbose, config
            self.plot_dir = str(Path(output_dir) / 'plots')
            Path(self.plot_dir).mkdir(parents=True, exist_ok=True)
            self.pred_boxes, self.meta = load_prediction_of_sample_tokens(
                result_path, config.max_boxes_per_sample, DetectionBox, sample_tokens=sample_tokens, verbose=verbose)
            self.gt_boxes = load_gt_of_sample_tokens(nusc, sample_tokens, DetectionBox, verbose=verbose)
            assert set(self.pred_boxes.sample_tokens) == set(self.gt_boxes.sample_tokens), \
                "Samples in split doesn't match samples in predictions."
            self.pred_boxes = filter_eval_boxes(nusc, add_center_dist(nusc, self.pred_boxes), config.class_range,
                                                verbose=verbose)
            self.gt_boxes = filter_eval_boxes(nusc, add_center_dist(nusc, self.gt_boxes), config.class_range,
                                              verbose=verbose)
            self.sample_tokens = self.gt_boxes.sample_tokens

    return SampleTokensDetectionEval


def format_metrics(metrics, class_names):
    """Devkit ``metrics_summary`` -> ``(result_str, result_dict)``.

    result_dict: ``mAP``, ``NDS``, the TP errors under the devkit names (``trans_err``, ...) and the short names
    (``mATE``, ...), and per class ``AP_<class>`` (mean over distance thresholds).
    """
    lines = ['---------------- nuScenes detection_cvpr_2019 results ----------------',
             '%-22s %6s %6s %6s %6s %6s %6s' % ('class', 'AP', 'ATE', 'ASE', 'AOE', 'AVE', 'AAE')]
    details = {}
    for name in class_names:
        if name not in metrics['mean_dist_aps']:
            continue
        ap, tp = metrics['mean_dist_aps'][name], metrics['label_tp_errors'][name]
        details[f'AP_{name}'] = float(ap)
        lines.append('%-22s %6.3f ' % (name, ap) + ' '.join('%6.3f' % tp[k] for k in ERR_NAMES))
    lines.append('---------------- average ----------------')
    for key, short in ERR_NAMES.items():
        val = float(metrics['tp_errors'][key])
        details[key] = details[short] = val
        lines.append('%s:\t%.4f' % (short, val))
    details['mAP'], details['NDS'] = float(metrics['mean_ap']), float(metrics['nd_score'])
    lines += ['mAP:\t%.4f' % details['mAP'], 'NDS:\t%.4f' % details['NDS']]
    return '\n'.join(lines) + '\n', details


def evaluate_det_annos(det_annos, class_names, data_root, version, split='val', split_file=None, output_path=None,
                       logger=None):
    """Write ``results_nusc.json`` for ``det_annos`` and score it with the devkit.

    Args:
        det_annos: OpenPCDet per-sample prediction dicts (see :func:`det_annos_to_nusc_results`).
        class_names: classes to report.
        data_root: folder holding ``<version>/`` (the devkit's ``dataroot``).
        version: 'v1.0-trainval', 'v1.0-mini', ...; 'v1.0-test' only writes the results.
        split: split name ('val', 'train', 'mini_val', or a key of ``split_file``).
        split_file: custom scene-split JSON or None for the official splits.
        output_path: folder for results and devkit outputs (a temporary folder when None).
    Returns:
        ``(result_str, result_dict)`` as :func:`format_metrics`; printed through ``logger``.
    Raises PartialEvaluationError when ``det_annos`` miss samples of the split (see
    :func:`rdd.datasets.nuscenes_splits.check_split_coverage` for why this is refused), DevkitTableError naming
    a devkit table that cannot be loaded.
    """
    logger = logger or logging.getLogger(__name__)
    output_path = Path(output_path) if output_path is not None else Path(tempfile.mkdtemp(prefix='rdd_nusc_eval_'))
    output_path.mkdir(parents=True, exist_ok=True)
    nusc = get_nusc(data_root, version)
    if version.endswith('test') and split_file is None:
        sample_tokens, custom, eval_set = None, False, 'test'
    else:
        eval_set, sample_tokens, custom = split_sample_tokens(nusc, split, split_file)
        check_split_coverage([d['metadata']['token'] for d in det_annos], sample_tokens, eval_set,
                             f'the predictions of {len(det_annos)} samples')
    results = det_annos_to_nusc_results(det_annos, nusc, sample_tokens)
    res_path = output_path / 'results_nusc.json'
    with open(res_path, 'w') as f:
        json.dump({'results': results, 'meta': {'use_camera': False, 'use_lidar': True, 'use_radar': False,
                                                'use_map': False, 'use_external': False}}, f)
    logger.info('nuScenes results written to %s', res_path)
    if sample_tokens is None:
        return 'No ground-truth annotations for evaluation', {}

    if not any(len(v) for v in results.values()):
        logger.warning('nuScenes eval: no sample of split %r has any prediction; the devkit cannot score this, '
                       'returning mAP = NDS = 0 and TP errors = 1', eval_set)
        details = {'mAP': 0.0, 'NDS': 0.0, **{k: 1.0 for k in ERR_NAMES}, **{v: 1.0 for v in ERR_NAMES.values()},
                   **{f'AP_{n}': 0.0 for n in class_names}}
        return 'nuScenes eval: no predictions (mAP 0, NDS 0)\n', details

    from nuscenes.eval.detection.config import config_factory
    cfg = config_factory('detection_cvpr_2019')
    if custom:
        evaluator = _sample_tokens_eval_class()(nusc, cfg, str(res_path), sample_tokens, str(output_path),
                                                verbose=False, eval_set=eval_set)
    else:
        from nuscenes.eval.detection.evaluate import DetectionEval
        evaluator = DetectionEval(nusc, config=cfg, result_path=str(res_path), eval_set=eval_set,
                                  output_dir=str(output_path), verbose=False)
    metrics = evaluator.main(plot_examples=0, render_curves=False)
    result_str, details = format_metrics(metrics, class_names)
    logger.info('\n%s', result_str)
    return result_str, details
