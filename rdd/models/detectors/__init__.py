"""Detector registry.

``DETECTORS`` maps a config's ``MODEL.NAME`` to a class. Register with ``@register_detector('Name')``.

Contract for a registered class (what ``rdd.models.build_network`` and the trainers rely on):

* constructor ``cls(model_cfg, num_class, dataset)``: ``model_cfg`` is the ``MODEL`` config (EasyDict),
  ``num_class`` an int, ``dataset`` any object with ``class_names``, ``point_cloud_range`` (6,) float32,
  ``voxel_size`` (3,), ``grid_size`` (3,) int64 (x, y, z), ``point_feature_encoder.num_point_features`` and
  ``depth_downsample_factor`` (see ``rdd.models.model_geometry``);
* an ``nn.Module`` whose ``forward(batch_dict)`` returns ``(ret_dict{'loss': scalar tensor}, tb_dict,
  disp_dict)`` in training mode and ``(pred_dicts, recall_dict)`` in eval mode, ``pred_dicts`` a list over
  samples of ``{'pred_boxes' (N, 7+), 'pred_scores' (N,), 'pred_labels' (N,) int64 1-based}``;
* ``update_global_step()``, ``load_params_from_file(...)``, ``load_params_with_optimizer(...)`` as in
  ``Detector3DTemplate``.
"""
DETECTORS = {}


def register_detector(name):
    """Class decorator adding ``cls`` to ``DETECTORS`` under ``name``.

    Raises ValueError when ``name`` is already taken by another class (re-registering the same class, e.g.
    after a module reload with an identical qualified name, is allowed).
    """
    def deco(cls):
        old = DETECTORS.get(name)
        if old is not None and old is not cls and \
                (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f'detector name {name!r} is already registered by {old.__module__}.{old.__qualname__}')
        DETECTORS[name] = cls
        return cls
    return deco


from .detector3d_template import Detector3DTemplate  # noqa: E402
from .centerpoint import CenterPoint  # noqa: E402

__all__ = ['DETECTORS', 'register_detector', 'Detector3DTemplate', 'CenterPoint']
