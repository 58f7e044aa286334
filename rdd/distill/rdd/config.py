"""The RDD loss config: a frozen dataclass per section, parsed with :func:`rdd.config_schema.parse_section`.

Every key has the default of DESIGN.md §4.1 (the paper's values where the paper gives one); docs/method.md gives
per key the paper's equation and the reason for each choice. YAML (every key shown with its default)::

    KD_LOSSES:
        - NAME: RDDLoss
          WEIGHT: 1.0                 # the Distiller's; keep 1.0 (the paper's weights are ALPHA_*)
          PROPOSAL: {SCORE_THRESH: 0.1, MAX_PER_SOURCE: 100}
          REGION: gaussian            # gaussian | box
          GRID_SIZE: 7
          TAU: 4.0
          LAMBDA: 0.1
          ALPHA_FEAT: 0.2
          ALPHA_LOGIT: 0.2
          REG_WEIGHT: 0.0
          LOG_HIST_INTERVAL: 500
"""
from dataclasses import dataclass, field
from typing import Literal

__all__ = ['ProposalConfig', 'RDDConfig', 'REGIONS']

REGIONS = ('gaussian', 'box')


@dataclass(frozen=True)
class ProposalConfig:
    """``PROPOSAL``: heatmap peaks kept per sample and source (teacher, student).

    ``SCORE_THRESH``: lowest sigmoid score of a peak (a value above 1 disables proposals, e.g. in tests);
    ``MAX_PER_SOURCE``: at most this many peaks per sample and source, highest scores first.
    """
    score_thresh: float = 0.1
    max_per_source: int = 100

    def __post_init__(self):
        if self.score_thresh < 0:
            raise ValueError(f'SCORE_THRESH must be >= 0, got {self.score_thresh}')
        if self.max_per_source < 1:
            raise ValueError(f'MAX_PER_SOURCE must be >= 1, got {self.max_per_source}')


@dataclass(frozen=True)
class RDDConfig:
    """The RDDLoss entry of ``MODEL.KD_LOSSES`` (without NAME / WEIGHT / TAG).

    Attributes:
        proposal: :class:`ProposalConfig`.
        region: ``gaussian`` (the (2r+1)-cell square of CenterPoint's Gaussian around the peak) or ``box`` (the
            decoded rotated box).
        grid_size: G, RoIAlign points per region side.
        tau: softmax temperature over channels (Eq. 2).
        lambda_: ``LAMBDA``, the disparity threshold of the pair weights, in [0, 1] (d ∈ [0, 1]).
        alpha_feat / alpha_logit: weights of L_feat and L_logit (Eq. 10).
        reg_weight: weight of the regression part of L_logit (0: the paper's center-based form).
        log_hist_interval: iterations between disparity histograms in TensorBoard (0: never).
    """
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    region: Literal['gaussian', 'box'] = 'gaussian'
    grid_size: int = 7
    tau: float = 4.0
    lambda_: float = 0.1
    alpha_feat: float = 0.2
    alpha_logit: float = 0.2
    reg_weight: float = 0.0
    log_hist_interval: int = 500

    def __post_init__(self):
        checks = [('GRID_SIZE', self.grid_size >= 1, '>= 1'), ('TAU', self.tau > 0, '> 0'),
                  ('LAMBDA', 0.0 <= self.lambda_ <= 1.0, 'in [0, 1] (the disparity d lies in [0, 1])'),
                  ('ALPHA_FEAT', self.alpha_feat >= 0, '>= 0'), ('ALPHA_LOGIT', self.alpha_logit >= 0, '>= 0'),
                  ('REG_WEIGHT', self.reg_weight >= 0, '>= 0'),
                  ('LOG_HIST_INTERVAL', self.log_hist_interval >= 0, '>= 0 (0: no histograms)')]
        for key, ok, rule in checks:
            if not ok:
                value = getattr(self, 'lambda_' if key == 'LAMBDA' else key.lower())
                raise ValueError(f'{key} must be {rule}, got {value}')
