"""Detector3DTemplate: builds OpenPCDet's module topology from a ``MODEL`` config; shared detector utilities."""
import logging
import os

import torch
import torch.nn as nn

from rdd.errors import CheckpointError, ConfigError
from rdd.models.checkpoint import load_state_dict_strict, read_checkpoint, read_model_state
from rdd.models.registries import SECTION_REGISTRIES
from rdd.ops.rotated_iou import boxes3d_iou

_LOG = logging.getLogger(__name__)

#: OpenPCDet's module topology: (attribute, ``MODEL`` section) in build order. The sections rdd has no modules
#: for (two-stage parts: PFE, POINT_HEAD, ROI_HEAD) leave their attribute None and are refused when configured.
MODULE_TOPOLOGY = (('vfe', 'VFE'), ('backbone_3d', 'BACKBONE_3D'), ('map_to_bev_module', 'MAP_TO_BEV'),
                   ('pfe', 'PFE'), ('backbone_2d', 'BACKBONE_2D'), ('dense_head', 'DENSE_HEAD'),
                   ('point_head', 'POINT_HEAD'), ('roi_head', 'ROI_HEAD'))


class Detector3DTemplate(nn.Module):
    """Base class of detectors: module building, global step, recall record and checkpoint loading.

    Args:
        model_cfg: the ``MODEL`` config (EasyDict).
        num_class (int): number of classes.
        dataset: object with ``class_names``, ``point_cloud_range``, ``voxel_size``, ``grid_size``,
            ``point_feature_encoder.num_point_features`` (see ``rdd.models.model_geometry``).
    """

    def __init__(self, model_cfg, num_class, dataset):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        self.dataset = dataset
        self.class_names = dataset.class_names
        self.register_buffer('global_step', torch.zeros(1, dtype=torch.long))
        self.module_topology = [attr for attr, _ in MODULE_TOPOLOGY]

    @property
    def mode(self):
        return 'TRAIN' if self.training else 'TEST'

    def update_global_step(self):
        """Add 1 to the ``global_step`` buffer (int64, shape [1])."""
        self.global_step += 1

    # ------------------------------------------------------------------ building
    def build_networks(self):
        """Build the modules present in ``model_cfg``, in topology order; return them as a list."""
        info = {
            'module_list': [],
            'num_rawpoint_features': self.dataset.point_feature_encoder.num_point_features,
            'num_point_features': self.dataset.point_feature_encoder.num_point_features,
            'grid_size': self.dataset.grid_size,
            'point_cloud_range': self.dataset.point_cloud_range,
            'voxel_size': self.dataset.voxel_size,
            'depth_downsample_factor': getattr(self.dataset, 'depth_downsample_factor', None),
        }
        for module_name, cfg_key in MODULE_TOPOLOGY:
            module = None
            if self.model_cfg.get(cfg_key, None) is not None:
                if cfg_key not in SECTION_REGISTRIES:
                    raise ConfigError(f'MODEL.{cfg_key} ({self.model_cfg[cfg_key].get("NAME")}) is not supported by '
                                      f'rdd (single-stage CenterPoint-style detectors only)')
                module = getattr(self, f'build_{module_name}')(info)
                info['module_list'].append(module)
            self.add_module(module_name, module)
        return info['module_list']

    def _cls(self, cfg_key):
        """The class registered for ``MODEL.<cfg_key>.NAME`` (RegistryError listing the known names)."""
        return SECTION_REGISTRIES[cfg_key].get(self.model_cfg[cfg_key].NAME)

    def build_vfe(self, info):
        vfe = self._cls('VFE')(model_cfg=self.model_cfg.VFE, num_point_features=info['num_rawpoint_features'],
                               point_cloud_range=info['point_cloud_range'], voxel_size=info['voxel_size'],
                               grid_size=info['grid_size'],
                               depth_downsample_factor=info['depth_downsample_factor'])
        info['num_point_features'] = vfe.get_output_feature_dim()
        return vfe

    def build_backbone_3d(self, info):
        backbone = self._cls('BACKBONE_3D')(model_cfg=self.model_cfg.BACKBONE_3D,
                                            input_channels=info['num_point_features'],
                                            grid_size=info['grid_size'], voxel_size=info['voxel_size'],
                                            point_cloud_range=info['point_cloud_range'])
        info['num_point_features'] = backbone.num_point_features
        info['backbone_channels'] = getattr(backbone, 'backbone_channels', None)
        return backbone

    def build_map_to_bev_module(self, info):
        module = self._cls('MAP_TO_BEV')(model_cfg=self.model_cfg.MAP_TO_BEV, grid_size=info['grid_size'])
        info['num_bev_features'] = module.num_bev_features
        return module

    def build_backbone_2d(self, info):
        module = self._cls('BACKBONE_2D')(model_cfg=self.model_cfg.BACKBONE_2D,
                                          input_channels=info.get('num_bev_features'))
        info['num_bev_features'] = module.num_bev_features
        return module

    def build_dense_head(self, info):
        head_cfg = self.model_cfg.DENSE_HEAD
        return self._cls('DENSE_HEAD')(
            model_cfg=head_cfg, input_channels=info['num_bev_features'],
            num_class=1 if head_cfg.get('CLASS_AGNOSTIC', False) else self.num_class,
            class_names=self.class_names, grid_size=info['grid_size'],
            point_cloud_range=info['point_cloud_range'], voxel_size=info['voxel_size'],
            predict_boxes_when_training=self.model_cfg.get('ROI_HEAD', None) is not None)

    def forward(self, batch_dict):
        raise NotImplementedError(f'{type(self).__name__} must define forward')

    # ------------------------------------------------------------------ evaluation helpers
    @staticmethod
    def generate_recall_record(box_preds, recall_dict, batch_index, data_dict=None, thresh_list=None):
        """Accumulate recall counts of one sample (OpenPCDet semantics, 3D rotated IoU).

        box_preds: (N, 7+) predicted boxes. Uses ``data_dict['gt_boxes'][batch_index]`` (M, 8+) when present
        (else returns ``recall_dict`` unchanged). Keys: ``gt`` (number of non-padding GT boxes), and for
        every threshold t ``rcnn_t`` (GT boxes whose best 3D IoU with a prediction is > t) and ``roi_t``
        (same for ``data_dict['rois']`` when present, else 0). Padding rows (all zeros) at the end are
        dropped, so a sample without GT adds nothing.
        """
        if data_dict is None or 'gt_boxes' not in data_dict:
            return recall_dict
        thresh_list = list(thresh_list or [])
        if len(recall_dict) == 0:
            recall_dict = {'gt': 0}
            for t in thresh_list:
                recall_dict[f'roi_{t}'] = 0
                recall_dict[f'rcnn_{t}'] = 0
        gt = data_dict['gt_boxes'][batch_index]
        nonzero = (gt != 0).any(dim=1).nonzero()
        cur_gt = gt[:int(nonzero.max()) + 1] if nonzero.numel() else gt[:0]
        if cur_gt.shape[0] == 0:
            return recall_dict
        rois = data_dict['rois'][batch_index] if 'rois' in data_dict else None
        iou_pred = boxes3d_iou(box_preds[:, :7], cur_gt[:, :7]) if box_preds.shape[0] > 0 else None
        iou_roi = boxes3d_iou(rois[:, :7], cur_gt[:, :7]) if rois is not None and rois.shape[0] > 0 else None
        for t in thresh_list:
            if iou_pred is not None:
                recall_dict[f'rcnn_{t}'] += int((iou_pred.max(dim=0)[0] > t).sum().item())
            if iou_roi is not None:
                recall_dict[f'roi_{t}'] += int((iou_roi.max(dim=0)[0] > t).sum().item())
        recall_dict['gt'] += int(cur_gt.shape[0])
        return recall_dict

    # ------------------------------------------------------------------ checkpoints
    def load_params_from_file(self, filename, logger=None, to_cpu=True, strict=True):
        """Load ``model_state`` from an OpenPCDet checkpoint (see ``rdd.models.checkpoint``).

        strict=True: any missing / unexpected / mis-shaped key raises one CheckpointError listing them all.
        strict=False: loads matching keys and logs the rest (OpenPCDet's behaviour). The tensors are read on
        CPU and copied to the model's device (``to_cpu`` is accepted for OpenPCDet compatibility).
        """
        log = logger or _LOG
        log.info('==> Loading parameters from checkpoint %s', filename)
        state = read_model_state(filename)
        load_state_dict_strict(self, state, strict=strict, logger=log)

    def load_params_with_optimizer(self, filename, to_cpu=False, optimizer=None, logger=None):
        """Strictly load model (and optimizer) state to resume training; return ``(it, epoch)``.

        The optimizer state comes from ``optimizer_state`` or, like OpenPCDet, from ``<name>_optim.pth``
        beside the checkpoint. ``epoch`` defaults to -1 and ``it`` to 0.0 when absent.
        """
        log = logger or _LOG
        log.info('==> Loading parameters from checkpoint %s', filename)
        ckpt = read_checkpoint(filename)
        if 'model_state' not in ckpt:
            raise CheckpointError(f"checkpoint {filename} has no 'model_state' (keys: {sorted(ckpt)[:10]})")
        epoch, it = ckpt.get('epoch', -1), ckpt.get('it', 0.0)
        load_state_dict_strict(self, ckpt['model_state'], strict=True, logger=log)
        if optimizer is not None:
            opt_state = ckpt.get('optimizer_state')
            if opt_state is None:
                root, ext = os.path.splitext(os.fspath(filename))
                optim_file = f'{root}_optim{ext}'
                if os.path.exists(optim_file):
                    opt_state = read_checkpoint(optim_file).get('optimizer_state')
            if opt_state is not None:
                log.info('==> Loading optimizer parameters from checkpoint %s', filename)
                optimizer.load_state_dict(opt_state)
        if 'version' in ckpt:
            log.info('==> Checkpoint trained from version: %s', ckpt['version'])
        log.info('==> Done')
        return it, epoch
