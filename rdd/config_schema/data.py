"""Schema of ``DATA_CONFIG`` (OpenPCDet's nuScenes keys; every key the data pipeline reads, and no other).

The augmentation (``DATA_AUGMENTOR.AUG_CONFIG_LIST``) and processing (``DATA_PROCESSOR``) steps are validated by
their ``NAME``. Geometry is checked here where it needs no model: ``POINT_CLOUD_RANGE`` max > min on every axis,
``VOXEL_SIZE`` > 0; :mod:`rdd.config_schema.validate` checks the grid against the model's strides.
"""
from __future__ import annotations

from dataclasses import dataclass, make_dataclass
from typing import Annotated, Mapping, Optional, Tuple, Union

from rdd.errors import ConfigError

from .sections import ByName, key_field

__all__ = ['DataConfig', 'VoxelProcessorConfig']

Floats2 = Tuple[float, float]
Floats3 = Tuple[float, float, float]


def _positive(value, key, minimum=1):
    if value is not None and value < minimum:
        raise ConfigError(f'must be >= {minimum}, got {value}', key=key)


def _per_mode(name, value_type):
    """A ``{train: X, test: X}`` section (OpenPCDet's lower-case mode keys) whose values are ``value_type``."""
    return make_dataclass(name, [(mode, value_type, key_field(mode)) for mode in ('train', 'test')], frozen=True)


PerModeFlag = _per_mode('PerModeFlag', bool)
PerModeCount = _per_mode('PerModeCount', int)
PerModeSplit = _per_mode('PerModeSplit', str)
PerModeFiles = _per_mode('PerModeFiles', Tuple[str, ...])


@dataclass(frozen=True)
class PrepareConfig:
    filter_by_min_points: Tuple[str, ...] = key_field('filter_by_min_points', ())


@dataclass(frozen=True)
class GTSamplingConfig:
    db_info_path: Tuple[str, ...]
    sample_groups: Tuple[str, ...]
    num_point_features: int
    prepare: Optional[PrepareConfig] = None
    database_with_fakelidar: Optional[bool] = None
    remove_extra_width: Optional[Floats3] = None
    limit_whole_scene: Optional[bool] = None
    use_road_plane: Optional[bool] = None


@dataclass(frozen=True)
class WorldFlipConfig:
    along_axis_list: Tuple[str, ...]


@dataclass(frozen=True)
class WorldRotationConfig:
    world_rot_angle: Union[Floats2, float]


@dataclass(frozen=True)
class WorldScalingConfig:
    world_scale_range: Floats2


@dataclass(frozen=True)
class WorldTranslationConfig:
    noise_translate_std: Optional[Union[Floats3, float]] = None
    world_translation_range: Optional[Floats2] = None
    along_axis_list: Optional[Tuple[str, ...]] = None


AUGMENTATIONS = {'gt_sampling': GTSamplingConfig, 'random_world_flip': WorldFlipConfig,
                 'random_world_rotation': WorldRotationConfig, 'random_world_scaling': WorldScalingConfig,
                 'random_world_translation': WorldTranslationConfig}


@dataclass(frozen=True)
class DataAugmentorConfig:
    disable_aug_list: Tuple[str, ...] = ()
    aug_config_list: Tuple[Annotated[Mapping, ByName(AUGMENTATIONS)], ...] = ()


@dataclass(frozen=True)
class MaskOutsideRangeConfig:
    remove_outside_boxes: Optional[bool] = None
    use_center_to_filter: Optional[bool] = None
    min_num_corners: Optional[int] = key_field('min_num_corners', None)


@dataclass(frozen=True)
class ShufflePointsConfig:
    """``shuffle_points``: shuffle the points of a sample, per mode."""
    shuffle_enabled: PerModeFlag


@dataclass(frozen=True)
class VoxelProcessorConfig:
    """``transform_points_to_voxels``: the voxel grid (metres) and the voxeliser's limits."""
    voxel_size: Floats3
    max_points_per_voxel: int
    max_number_of_voxels: PerModeCount

    def __post_init__(self):
        if any(v <= 0 for v in self.voxel_size):
            raise ConfigError(f'must be > 0 on every axis, got {list(self.voxel_size)}', key='VOXEL_SIZE')
        _positive(self.max_points_per_voxel, 'MAX_POINTS_PER_VOXEL')


PROCESSORS = {'mask_points_and_boxes_outside_range': MaskOutsideRangeConfig, 'shuffle_points': ShufflePointsConfig,
              'transform_points_to_voxels': VoxelProcessorConfig}


@dataclass(frozen=True)
class PointFeatureEncodingConfig:
    encoding_type: str = key_field('encoding_type')
    used_feature_list: Tuple[str, ...] = key_field('used_feature_list')
    src_feature_list: Tuple[str, ...] = key_field('src_feature_list')


@dataclass(frozen=True)
class DataConfig:
    """``DATA_CONFIG`` of a nuScenes config (``DATASET: NuScenesDataset``)."""
    dataset: str
    point_cloud_range: Tuple[float, float, float, float, float, float]
    point_feature_encoding: PointFeatureEncodingConfig
    data_processor: Tuple[Annotated[Mapping, ByName(PROCESSORS)], ...]
    # optional keys (None: absent; the dataset applies its defaults)
    data_path: Optional[str] = None                     # relative to the repository root
    version: Optional[str] = None                       # e.g. v1.0-trainval; the devkit dataroot is DATA_PATH/VERSION
    max_sweeps: Optional[int] = None                    # LiDAR sweeps merged per sample, >= 1
    pred_velocity: Optional[bool] = None                # keep vx, vy in gt_boxes
    set_nan_velocity_to_zeros: Optional[bool] = None
    filter_min_points_in_gt: Optional[int] = None       # drop GT boxes with fewer LiDAR points, >= 0
    data_split: Optional[PerModeSplit] = None           # {train: train, test: val}
    info_path: Optional[PerModeFiles] = None            # info files per mode, relative to the dataroot
    split_file: Optional[str] = None                    # custom scene split JSON (evaluation)
    balanced_resampling: Optional[bool] = None          # CBGS
    data_augmentor: Optional[DataAugmentorConfig] = None

    def __post_init__(self):
        pcr = self.point_cloud_range
        if not all(pcr[k + 3] > pcr[k] for k in range(3)):
            raise ConfigError(f'must be [x_min, y_min, z_min, x_max, y_max, z_max] with max > min on every axis, '
                              f'got {list(pcr)}', key='POINT_CLOUD_RANGE')
        _positive(self.max_sweeps, 'MAX_SWEEPS')
        _positive(self.filter_min_points_in_gt, 'FILTER_MIN_POINTS_IN_GT', minimum=0)
        if not any(isinstance(p, VoxelProcessorConfig) for p in self.data_processor):
            raise ConfigError("has no 'transform_points_to_voxels' entry (needed for VOXEL_SIZE)",
                              key='DATA_PROCESSOR')

    @property
    def voxel_processor(self) -> VoxelProcessorConfig:
        return next(p for p in self.data_processor if isinstance(p, VoxelProcessorConfig))

    def voxel_processor_index(self) -> int:
        return next(i for i, p in enumerate(self.data_processor) if isinstance(p, VoxelProcessorConfig))
