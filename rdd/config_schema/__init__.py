"""Config validation, one mechanism: a frozen dataclass is a config section's schema and value object
(:func:`parse_section`); :func:`validate_config` checks a whole loaded config with it (keys, types, ranges and the
grid against the model's strides), naming the key and the file in every error.

* :mod:`rdd.config_schema.sections` -- the mechanism (``parse_section``, ``ByName``, ``key_field``);
* :mod:`rdd.config_schema.data` / :mod:`~rdd.config_schema.optimization` / :mod:`~rdd.config_schema.model` --
  ``DATA_CONFIG``, ``OPTIMIZATION`` and the ``MODEL`` sections;
* :mod:`rdd.config_schema.validate` -- the whole file, the Distiller's section and the grid check.
"""
from .sections import ByName, config_key, key_field, parse_section, section_to_mapping
from .validate import ConfigFile, DistillerConfig, validate_config

__all__ = ['parse_section', 'section_to_mapping', 'ByName', 'key_field', 'config_key', 'validate_config',
           'ConfigFile', 'DistillerConfig']
