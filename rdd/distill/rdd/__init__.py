"""RDD (Representation Disparity-aware Distillation, Li et al., ICCV 2023) as published, one module per step
(docs/method.md): proposals (heatmap peaks) -> regions -> ψ and channel-softmax normalisation -> Gaussian-MI
disparity -> pair weights -> terms; ``RDDLoss`` ties them together."""
from .adapter import StudentAdapter
from .config import ProposalConfig, RDDConfig
from .disparity import PairDisparity, gaussian_disparity, pearson_correlation
from .head_maps import heatmap_logits, regression_maps
from .normalisation import channel_softmax
from .pair_weights import pair_weights
from .proposals import Proposals, heatmap_proposals
from .rdd_loss import RDDLoss, RegionPairs
from .regions import gaussian_radius_cells, region_boxes
from .terms import feature_distance, l1_distance, per_sample_mean

__all__ = ['RDDLoss', 'RDDConfig', 'ProposalConfig', 'RegionPairs', 'Proposals', 'heatmap_proposals',
           'region_boxes', 'gaussian_radius_cells', 'StudentAdapter', 'channel_softmax', 'PairDisparity',
           'pearson_correlation', 'gaussian_disparity', 'pair_weights', 'feature_distance', 'l1_distance',
           'per_sample_mean', 'heatmap_logits', 'regression_maps']
