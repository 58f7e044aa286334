"""RDD (Representation Disparity-aware Distillation) as small pure modules; see docs/method.md.

``RDDLoss`` ties them together: proposals -> rotated-RoI region pairs -> disparity selection -> balanced mask ->
feature / logit MI bounds.
"""
from .balanced_mask import balanced_pair_weights, weighted_sample_mean
from .disparity import DISPARITIES, gaussian_kl_disparity, select_top_fraction, snr_disparity
from .mi_bounds import LearnableVariance, bernoulli_bound, gaussian_bound
from .proposals import SOURCES, ProposalGenerator, ProposalSet
from .defaults import RDD_DEFAULTS, rdd_config_with_defaults
from .rdd_loss import RDDLoss

__all__ = ['RDDLoss', 'RDD_DEFAULTS', 'rdd_config_with_defaults', 'ProposalGenerator', 'ProposalSet', 'SOURCES',
           'gaussian_kl_disparity', 'snr_disparity', 'DISPARITIES', 'select_top_fraction', 'balanced_pair_weights',
           'weighted_sample_mean',
           'LearnableVariance', 'gaussian_bound', 'bernoulli_bound']
