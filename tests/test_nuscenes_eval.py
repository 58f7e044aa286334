"""nuScenes evaluation: GT-as-prediction exactness through the devkit, result format, splits, edge cases."""
import json
import logging
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rdd.datasets.nuscenes_eval import (ERR_NAMES, det_annos_to_nusc_results, evaluate_det_annos, get_nusc,
                                        lidar_boxes_to_global, speed_attribute)
from rdd.datasets.nuscenes_splits import PartialEvaluationError

from test_dataset_helpers import CLASS_NAMES, make_cfg


@pytest.fixture(scope='module')
def nusc_root(synth_nusc):
    s = synth_nusc
    return SimpleNamespace(root=Path(s.root), version=s.version, train_info=Path(s.train_info_path),
                           val_info=Path(s.val_info_path))


def _infos(*paths):
    return sum([pickle.load(open(p, 'rb')) for p in paths], [])


def _gt_pred_dicts(infos, shift=0.0):
    """GT boxes of the infos as a model's pred_dicts (tensors, 1-based labels), optionally shifted in x."""
    out = []
    for info in infos:
        keep = np.isin(info['gt_names'], CLASS_NAMES)
        boxes = info['gt_boxes'][keep].copy()
        boxes[:, 0] += shift
        out.append({'pred_boxes': torch.from_numpy(boxes).float(),
                    'pred_scores': torch.linspace(1.0, 0.5, int(keep.sum())),
                    'pred_labels': torch.tensor([CLASS_NAMES.index(n) + 1 for n in info['gt_names'][keep]])})
    return out


def _dataset(nusc_root, split_file, split, info_paths):
    from rdd.datasets.nuscenes_dataset import NuScenesDataset
    cfg = make_cfg(nusc_root.root.parent, augment=False, version=nusc_root.version)
    cfg.DATA_SPLIT = {'train': 'train', 'test': split}
    cfg.INFO_PATH = {'train': [str(p) for p in info_paths], 'test': [str(p) for p in info_paths]}
    if split_file is not None:
        cfg.SPLIT_FILE = str(split_file)
    return NuScenesDataset(cfg, CLASS_NAMES, training=False, root_path=nusc_root.root.parent)


def _evaluate(ds, infos, shift, out):
    batch = {'frame_id': [Path(i['lidar_path']).stem for i in infos], 'metadata': [{'token': i['token']} for i in infos]}
    annos = ds.generate_prediction_dicts(batch, _gt_pred_dicts(infos, shift), CLASS_NAMES)
    return ds.evaluation(annos, CLASS_NAMES, output_path=out)


def _present_classes(nusc_root, sample_tokens):
    """Classes with GT left after the devkit's own filtering (distance, zero points, bike racks)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt_of_sample_tokens
    from nuscenes.eval.detection.data_classes import DetectionBox
    nusc = get_nusc(nusc_root.root, nusc_root.version)
    gt = load_gt_of_sample_tokens(nusc, sample_tokens, DetectionBox)
    gt = filter_eval_boxes(nusc, add_center_dist(nusc, gt), config_factory('detection_cvpr_2019').class_range)
    return {b.detection_name for b in gt.all}


def test_gt_as_predictions_is_exact_and_shift_scores_lower(nusc_root, tmp_path):
    splits = json.load(open(nusc_root.root / nusc_root.version / 'splits.json'))
    all_split = tmp_path / 'all_scenes.json'
    json.dump({'all': splits['train'] + splits['val']}, open(all_split, 'w'))
    infos = _infos(nusc_root.train_info, nusc_root.val_info)
    ds = _dataset(nusc_root, all_split, 'all', [nusc_root.train_info, nusc_root.val_info])
    result_str, res = _evaluate(ds, infos, 0.0, tmp_path / 'exact')
    present = _present_classes(nusc_root, [i['token'] for i in infos])
    for name in present:
        assert res[f'AP_{name}'] >= 0.99, (name, result_str)
    for key in ('mATE', 'mASE', 'mAOE', 'mAVE'):
        assert res[key] <= 0.01 + (1 - len(present) / 10), result_str
    if len(present) == 10:
        assert res['mAP'] >= 0.99 and res['NDS'] >= 0.95, result_str
    else:  # classes without GT score AP 0 in the devkit
        assert res['mAP'] >= 0.99 * len(present) / 10, result_str
    assert 'mAP' in result_str and 'NDS' in result_str and set(ERR_NAMES) <= set(res)
    assert (tmp_path / 'exact' / 'results_nusc.json').is_file()
    assert (tmp_path / 'exact' / 'metrics_summary.json').is_file()

    _, shifted = _evaluate(ds, infos, 1.0, tmp_path / 'shifted')
    assert shifted['mAP'] <= 0.7 * res['mAP'] and shifted['NDS'] <= res['NDS'] - 0.15
    assert shifted['mATE'] >= 0.9


def test_official_and_custom_split_paths_agree(nusc_root, tmp_path):
    splits = json.load(open(nusc_root.root / nusc_root.version / 'splits.json'))
    val_split = tmp_path / 'val_only.json'
    json.dump({'val': splits['val']}, open(val_split, 'w'))
    infos = _infos(nusc_root.val_info)
    official = _dataset(nusc_root, None, 'val', [nusc_root.val_info])
    # the synthetic v1.0-mini root has <version>/splits.json; an official version ignores it (as info creation)
    assert (nusc_root.root / nusc_root.version / 'splits.json').is_file() and official.split_file() is None
    _, a = _evaluate(official, infos, 0.3, tmp_path / 'official')
    _, b = _evaluate(_dataset(nusc_root, val_split, 'val', [nusc_root.val_info]), infos, 0.3, tmp_path / 'custom')
    assert a == pytest.approx(b)
    assert 0.5 < a['mAP'] <= 1 + 1e-9 and a['mATE'] > 0.25  # 0.3 m shift: matched, ATE >= 0.3


def test_partial_info_file_is_refused_not_scored_as_missed(nusc_root, tmp_path):
    """Infos / predictions that cover only part of the split: scoring them would count every missing sample as
    one with no detections (GT-as-prediction far below 1). Refused before inference (the infos) and at
    evaluation (the predictions), naming what covers how much of which split."""
    infos = _infos(nusc_root.val_info)
    assert len(infos) == 4  # the session root: one val scene of 4 key frames
    partial_info = tmp_path / 'nuscenes_infos_10sweeps_val_partial.pkl'
    pickle.dump(infos[:3], open(partial_info, 'wb'))
    ds = _dataset(nusc_root, None, 'val', [partial_info])
    with pytest.raises(PartialEvaluationError, match=r"val_partial\.pkl'\] cover 3 of the 4 samples of the "
                                                     r"evaluation split 'mini_val' \(1 missing, e\.g\. sample "
                                                     + infos[3]['token']):
        ds.check_evaluation_inputs()
    with pytest.raises(PartialEvaluationError, match=r"predictions of 3 samples cover 3 of the 4 samples.*"
                                                     r"SPLIT_FILE"):
        _evaluate(ds, infos[:3], 0.0, tmp_path / 'partial')
    assert not (tmp_path / 'partial' / 'results_nusc.json').exists()  # nothing scored, nothing written
    # the honest way to evaluate a subset: a split that names it (here the whole scene, all 4 samples)
    full = _dataset(nusc_root, None, 'val', [nusc_root.val_info])
    full.check_evaluation_inputs()
    _, res = _evaluate(full, infos, 0.0, tmp_path / 'full')
    present = _present_classes(nusc_root, [i['token'] for i in infos])
    assert all(res[f'AP_{name}'] >= 0.99 for name in present)


def test_results_json_format_and_edge_cases(nusc_root, tmp_path, caplog):
    nusc = get_nusc(nusc_root.root, nusc_root.version)
    infos = _infos(nusc_root.val_info)
    tokens = [i['token'] for i in infos]
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(-20, 20, (600, 3)), rng.uniform(1, 3, (600, 3)),
                            rng.uniform(-3, 3, (600, 1)), rng.uniform(-5, 5, (600, 2))], 1)
    boxes[0, 7:9] = np.nan
    det = {'name': np.array(['car', 'pedestrian', 'barrier'] * 200), 'score': rng.uniform(0, 1, 600),
           'boxes_lidar': boxes, 'pred_labels': np.ones(600, dtype=int), 'metadata': {'token': tokens[0]}}
    res = det_annos_to_nusc_results([det], nusc, tokens)
    assert list(res) == tokens and all(res[t] == [] for t in tokens[1:])
    assert len(res[tokens[0]]) == 500
    kept = sorted(det['score'])[-500:]
    assert sorted(b['detection_score'] for b in res[tokens[0]]) == pytest.approx(kept)
    from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES
    for b in res[tokens[0]]:
        assert b['attribute_name'] in ATTRIBUTE_NAMES or (b['attribute_name'] == '' and b['detection_name'] == 'barrier')
        assert np.isfinite(b['velocity']).all() and len(b['rotation']) == 4 and len(b['size']) == 3
    with pytest.raises(ValueError, match='not in the evaluation split'):
        det_annos_to_nusc_results([dict(det, metadata={'token': tokens[0]})], nusc, tokens[1:])
    with pytest.raises(KeyError, match='no-such-token'):
        det_annos_to_nusc_results([dict(det, metadata={'token': 'no-such-token'})], nusc)
    with pytest.raises(ValueError, match='Car'):
        det_annos_to_nusc_results([dict(det, name=np.array(['Car'] * 600))], nusc)
    twice = det_annos_to_nusc_results([det, dict(det, score=det['score'][:3], boxes_lidar=boxes[:3],
                                                 name=det['name'][:3])], nusc)
    assert len(twice[tokens[0]]) == 3  # a repeated sample replaces (distributed padding), never doubles

    empty = [{'name': np.zeros(0, dtype=str), 'score': np.zeros(0), 'boxes_lidar': np.zeros((0, 9)),
              'pred_labels': np.zeros(0, dtype=int), 'metadata': {'token': t}} for t in tokens]
    with caplog.at_level(logging.WARNING):
        _, out = evaluate_det_annos(empty, CLASS_NAMES, nusc_root.root, nusc_root.version, split='val',
                                    split_file=nusc_root.root / nusc_root.version / 'splits.json',
                                    output_path=tmp_path / 'empty')
    assert out['mAP'] == 0 and out['NDS'] == 0 and out['mATE'] == 1
    assert 'no sample' in caplog.text
    written = json.load(open(tmp_path / 'empty' / 'results_nusc.json'))
    assert sorted(written['results']) == sorted(tokens) and written['meta']['use_lidar']


def test_lidar_to_global_matches_devkit_box():
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion
    rng = np.random.default_rng(0)
    cs = {'translation': [0.9, 0.1, 1.8], 'rotation': list(Quaternion(axis=[0.1, 0.2, 1], angle=1.4).elements)}
    pose = {'translation': [400.0, 1200.0, 0.0], 'rotation': list(Quaternion(axis=[0, 0, 1], angle=-2.2).elements)}
    boxes = np.concatenate([rng.uniform(-50, 50, (5, 3)), rng.uniform(1, 4, (5, 3)), rng.uniform(-3, 3, (5, 3))], 1)
    c, q, v = lidar_boxes_to_global(boxes, cs, pose)
    for k, b in enumerate(boxes):
        box = Box(b[:3], b[[4, 3, 5]], Quaternion(axis=[0, 0, 1], radians=b[6]), velocity=(b[7], b[8], 0.0))
        box.rotate(Quaternion(cs['rotation']))
        box.translate(np.array(cs['translation']))
        box.rotate(Quaternion(pose['rotation']))
        box.translate(np.array(pose['translation']))
        np.testing.assert_allclose(c[k], box.center, atol=1e-9)
        np.testing.assert_allclose(v[k], box.velocity[:2], atol=1e-9)
        assert abs(abs(np.dot(q[k], box.orientation.elements)) - 1) < 1e-12


def test_speed_attribute_rule():
    assert speed_attribute('car', 1.0) == 'vehicle.moving' and speed_attribute('car', 0.1) == 'vehicle.parked'
    assert speed_attribute('bus', 0.1) == 'vehicle.stopped' and speed_attribute('bicycle', 3) == 'cycle.with_rider'
    assert speed_attribute('pedestrian', 0.0) == 'pedestrian.standing'
    assert speed_attribute('pedestrian', 1.5) == 'pedestrian.moving'
    assert speed_attribute('traffic_cone', 2.0) == ''


def test_generate_prediction_dicts_layout():
    from rdd.datasets.dataset_template import DatasetTemplate
    preds = [{'pred_boxes': torch.ones(2, 9), 'pred_scores': torch.tensor([0.9, 0.1]),
              'pred_labels': torch.tensor([1, 10])},
             {'pred_boxes': torch.zeros(0, 9), 'pred_scores': torch.zeros(0), 'pred_labels': torch.zeros(0).long()}]
    batch = {'frame_id': np.array(['a', 'b']), 'metadata': [{'token': 'ta'}, {'token': 'tb'}]}
    annos = DatasetTemplate.generate_prediction_dicts(batch, preds, CLASS_NAMES)
    assert list(annos[0]['name']) == ['car', 'traffic_cone'] and annos[0]['boxes_lidar'].shape == (2, 9)
    assert annos[1]['boxes_lidar'].shape == (0, 9) and annos[1]['metadata']['token'] == 'tb'
    with pytest.raises(ValueError, match='1-based'):
        DatasetTemplate.generate_prediction_dicts(batch, [dict(preds[0], pred_labels=torch.tensor([0, 1]))],
                                                  CLASS_NAMES)
