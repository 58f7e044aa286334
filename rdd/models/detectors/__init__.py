"""Detectors (``MODEL.NAME``, registry :data:`rdd.models.registries.DETECTORS`).

Contract for a registered detector (what ``rdd.models.build_network`` and the trainers rely on):

* called as ``cls(model_cfg, num_class, dataset)``: ``model_cfg`` is the ``MODEL`` config (EasyDict),
  ``num_class`` an int, ``dataset`` a dataset or a :class:`rdd.models.dataset_facts.DatasetFacts`
  (``class_names``, ``point_cloud_range`` (6,) float32, ``voxel_size`` (3,), ``grid_size`` (3,) int64 (x, y, z),
  ``point_feature_encoder.num_point_features``, ``depth_downsample_factor``);
* returns an ``nn.Module`` whose ``forward(batch_dict)`` returns ``(ret_dict{'loss': scalar tensor}, tb_dict,
  disp_dict)`` in training mode and ``(pred_dicts, recall_dict)`` in eval mode, ``pred_dicts`` a list over
  samples of ``{'pred_boxes' (N, 7+), 'pred_scores' (N,), 'pred_labels' (N,) int64 1-based}``;
* ``update_global_step()``, ``load_params_from_file(...)``, ``load_params_with_optimizer(...)`` as in
  ``Detector3DTemplate``.
"""
from .centerpoint import CenterPoint
from .detector3d_template import Detector3DTemplate

__all__ = ['Detector3DTemplate', 'CenterPoint']
