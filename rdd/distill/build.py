"""The steps of :meth:`rdd.distill.distiller.Distiller.from_config`: validate the ``MODEL`` section, check the
class lists and grids, build the teacher (strictly loaded, with its own voxels when its grid differs) and the
KD losses. Every problem is a :class:`rdd.errors.KDConfigError` (or a TeacherCheckpointError) naming the key."""
import logging

from rdd.config_schema import DistillerConfig, parse_section
from rdd.errors import ConfigError, KDConfigError
from rdd.geometry import BEVGrid
from rdd.models import build_network, model_geometry

from .registry import build_kd_loss, kd_loss_key
from .subconfig import complete_sub_config
from .teacher import TeacherVoxelizer, load_teacher_weights

_LOG = logging.getLogger(__name__)

__all__ = ['parse_distiller_config', 'check_class_names', 'check_student_grid', 'build_teacher',
           'teacher_voxelizer', 'build_kd_losses']


def parse_distiller_config(model_cfg):
    """``(DistillerConfig, student_cfg, teacher_cfg)`` from a Distiller ``MODEL`` section; ``STUDENT`` /
    ``TEACHER`` loaded by OpenPCDet's loader are completed first (:mod:`rdd.distill.subconfig`) and returned as
    the config mappings the detectors are built from."""
    subs = {who: complete_sub_config(model_cfg[who], f'MODEL.{who}') for who in ('STUDENT', 'TEACHER')
            if who in model_cfg}
    try:
        parsed = parse_section(DistillerConfig, dict(model_cfg, **subs), 'MODEL', ignore=('NAME',))
    except KDConfigError:
        raise
    except ConfigError as err:
        raise KDConfigError(str(err), key=err.key) from None
    return parsed, subs['STUDENT'], subs['TEACHER']


def check_class_names(class_names, student_cfg, teacher_cfg):
    """KDConfigError unless both sub-configs list the data pipeline's ``class_names``."""
    for who, sub in (('STUDENT', student_cfg), ('TEACHER', teacher_cfg)):
        if list(sub.CLASS_NAMES) != list(class_names):
            raise KDConfigError(f'MODEL.{who}.CLASS_NAMES {list(sub.CLASS_NAMES)} differ from CLASS_NAMES '
                                f'{list(class_names)}: teacher and student must share the class list')


def check_student_grid(student_cfg, data_grid: BEVGrid):
    """KDConfigError unless the student's own config voxelises as the data pipeline does (``data_grid``)."""
    student_grid = model_geometry(student_cfg).grid
    if not student_grid.same_voxels(data_grid):
        raise KDConfigError(f'MODEL.STUDENT.DATA_CONFIG grid (voxel {list(student_grid.voxel_size)}, range '
                            f'{list(student_grid.point_cloud_range)}) differs from the data pipeline DATA_CONFIG '
                            f'(voxel {list(data_grid.voxel_size)}, range {list(data_grid.point_cloud_range)}): the '
                            f'exported student would be evaluated on another grid than it was trained on')


def build_teacher(teacher_cfg, ckpt_path):
    """The teacher detector of ``teacher_cfg`` with the weights of ``ckpt_path`` loaded strictly."""
    facts = model_geometry(teacher_cfg)
    teacher = build_network(teacher_cfg.MODEL, num_class=len(facts.class_names), dataset=facts)
    load_teacher_weights(teacher, ckpt_path)
    return teacher


def teacher_voxelizer(teacher_cfg, data_grid: BEVGrid, num_point_features):
    """None when the teacher voxelises as the data pipeline does, else a :class:`TeacherVoxelizer` that makes its
    own voxels from the batch's points (KDConfigError when it needs other point features)."""
    facts = model_geometry(teacher_cfg)
    if facts.grid.same_voxels(data_grid):
        return None
    if facts.num_point_features != num_point_features:
        raise KDConfigError(f'MODEL.TEACHER uses {facts.num_point_features} point features, the student\'s data '
                            f'pipeline gives {num_point_features}')
    _LOG.info('Teacher grid (voxel %s, range %s) differs from the student data grid (voxel %s, range %s): points '
              'are re-voxelized for the teacher', list(facts.grid.voxel_size), list(facts.grid.point_cloud_range),
              list(data_grid.voxel_size), list(data_grid.point_cloud_range))
    return TeacherVoxelizer(teacher_cfg, num_point_features)


def build_kd_losses(entries, context):
    """``({key: loss module}, {key: WEIGHT})`` in ``MODEL.KD_LOSSES`` order, keys by TAG / NAME; each loss's
    feature keys must exist on both models (KDConfigError naming them)."""
    losses, weights = {}, {}
    for i, entry in enumerate(entries or []):
        module = build_kd_loss(entry, context, index=i)  # first: its errors name a missing / unknown NAME
        key = kd_loss_key(entry, i, taken=list(losses))
        losses[key], weights[key] = module, float(entry.get('WEIGHT', 1.0))
    for module in losses.values():
        for feature in getattr(module, 'feature_keys', ('spatial_features_2d',)):
            context.feature_channels(feature, 'MODEL.KD_LOSSES', cfg_key='feature key')
    return losses, weights
