"""RDD loss config: every key with its default (docs/method.md, section 5) and the one validation routine."""
import copy

from rdd.errors import ConfigError

from .disparity import DISPARITIES
from .proposals import SOURCES

__all__ = ['RDD_DEFAULTS', 'DEFAULT_HEAD_DICT', 'rdd_config_with_defaults']

RDD_DEFAULTS = {
    'NAME': 'RDDLoss', 'WEIGHT': 1.0,  # registry keys: the Distiller's loss registry applies WEIGHT
    'PROPOSAL': {'SCORE_THRESH': 0.3, 'NMS_THRESH': 0.2, 'MAX_PER_SOURCE': 100, 'USE_GT': False, 'MERGE_IOU': 0.5,
                 'SOURCES': ['teacher', 'student']},
    'GRID_SIZE': 7, 'GAMMA': 0.6, 'DISPARITY': 'kl', 'DISPARITY_EPS': 1e-4, 'TEMPERATURE': 1.0,
    'LAMBDA_FEAT': 1.0, 'LAMBDA_LOGIT': 1.0, 'LAMBDA_REG': 0.2, 'LOGIT_HEADS': 'own',
    'BALANCE': {'SIZE': True, 'SOURCE': True, 'CLASS': True},
    'COMPRESSION_BETA': 0.0, 'GRID_MISMATCH': 'resample', 'FEATURE_KEY': 'spatial_features_2d',
    'VAR_INIT': 1.0, 'VAR_EPS': 1e-4, 'LEARN_VAR': True,
}
_CHOICES = {'LOGIT_HEADS': ('own', 'all'), 'GRID_MISMATCH': ('resample', 'native', 'error'),
            'DISPARITY': tuple(DISPARITIES)}
DEFAULT_HEAD_DICT = {'center': 2, 'center_z': 1, 'dim': 3, 'rot': 2, 'vel': 2}


def _fill(cfg, defaults, prefix):
    out = {}
    for key in cfg:
        if key not in defaults:
            raise ConfigError(f'unknown RDD loss config key {prefix}{key} (known: {sorted(defaults)})')
    for key, default in defaults.items():
        val = cfg[key] if key in cfg else copy.deepcopy(default)
        if isinstance(default, dict):
            if not isinstance(val, dict):
                raise ConfigError(f'RDD loss config key {prefix}{key} must be a mapping, got {val!r}')
            val = _fill(val, default, f'{prefix}{key}.')
        elif key in _CHOICES and val not in _CHOICES[key]:
            raise ConfigError(f'RDD loss config key {prefix}{key} must be one of {_CHOICES[key]}, got {val!r}')
        out[key] = val
    return out


def rdd_config_with_defaults(cfg):
    """Validate an RDD loss config (unknown key or bad value -> ConfigError naming it) and fill every default;
    returns a dict."""
    c = _fill(dict(cfg or {}), RDD_DEFAULTS, '')
    sources = c['PROPOSAL']['SOURCES']
    sources = [sources] if isinstance(sources, str) else list(sources)
    checks = [('GRID_SIZE', int(c['GRID_SIZE']) >= 1, '>= 1'), ('GAMMA', 0 < float(c['GAMMA']) <= 1, 'in (0, 1]'),
              ('TEMPERATURE', float(c['TEMPERATURE']) > 0, '> 0'), ('VAR_EPS', float(c['VAR_EPS']) > 0, '> 0'),
              ('VAR_INIT', float(c['VAR_INIT']) > float(c['VAR_EPS']), '> VAR_EPS'),
              ('DISPARITY_EPS', float(c['DISPARITY_EPS']) >= 0, '>= 0'),
              ('COMPRESSION_BETA', float(c['COMPRESSION_BETA']) >= 0, '>= 0'),
              ('PROPOSAL.SOURCES', bool(sources) and set(sources) <= set(SOURCES[:2]), f'a subset of {SOURCES[:2]}')]
    checks += [(k, float(c[k]) >= 0, '>= 0') for k in ('LAMBDA_FEAT', 'LAMBDA_LOGIT', 'LAMBDA_REG')]
    for key, ok, rule in checks:
        if not ok:
            value = c['PROPOSAL']['SOURCES'] if key == 'PROPOSAL.SOURCES' else c[key]
            raise ConfigError(f'RDD loss config key {key} must be {rule}, got {value!r}')
    return c
