"""OpenPCDet plugin: register rdd's classes into pcdet's name -> class registries.

``import rdd.plugin`` registers them when ``pcdet`` is importable (OpenPCDet's ``pcdet.models`` needs its
compiled CUDA ops; when it cannot be imported nothing happens). ``register(registries)`` does the work on any
mapping of registry dicts, so it is testable without pcdet. Names inserted (see docs/openpcdet.md):

* ``detectors``: ``Distiller`` (student + frozen teacher + KD losses; builds its student and teacher with rdd's
  own modules, which load OpenPCDet checkpoints strictly);
* ``backbones_3d``: ``VoxelResBackBone8xWidth`` (OpenPCDet's ``VoxelResBackBone8x`` with ``WIDTH`` /
  ``NUM_FILTERS``: the CP-Voxel-XS / XXS 3D widths, which OpenPCDet's own class cannot express);
* ``backbones_2d``: ``BaseBEVBackboneWidth`` (``BaseBEVBackbone`` with ``WIDTH``);
* ``dense_heads``: ``CenterHeadRDD`` (rdd's ``CenterHead``: no ``.cuda()``, raw logits kept);
* ``kd_losses`` (only when the mapping has that key): every KD loss class of :mod:`rdd.distill.registry`.

pcdet's own classes keep their names: an existing entry bound to a different class is never overwritten
(PluginConflictError names it); re-registering the same class is a no-op. The width classes are registered in
rdd's own registries under the same names, so one student config builds the same model in both frameworks; a
config naming them fails loudly in OpenPCDet without the plugin (unknown name) instead of building other shapes.
"""
import importlib
import importlib.util
import logging

import rdd.distill  # noqa: F401  (registers the Distiller and the KD losses)
from rdd.distill.registry import KD_LOSSES
from rdd.errors import PluginConflictError
from rdd.models.registries import BACKBONES_2D, BACKBONES_3D, DENSE_HEADS, DETECTORS, OPENPCDET_PLUGIN_NAMES

_LOG = logging.getLogger(__name__)

# pcdet module holding each registry (its ``__all__`` dict)
PCDET_REGISTRY_MODULES = {
    'detectors': 'pcdet.models.detectors',
    'backbones_3d': 'pcdet.models.backbones_3d',
    'backbones_2d': 'pcdet.models.backbones_2d',
    'dense_heads': 'pcdet.models.dense_heads',
}


def plugin_entries():
    """``{registry name: {class name: class}}`` that :func:`register` inserts."""
    names = OPENPCDET_PLUGIN_NAMES
    return {
        'detectors': {n: DETECTORS.get(n) for n in names['NAME']},  # Distiller.from_config
        'backbones_3d': {n: BACKBONES_3D.get(n) for n in names['BACKBONE_3D']},
        'backbones_2d': {n: BACKBONES_2D.get(n) for n in names['BACKBONE_2D']},
        'dense_heads': {n: DENSE_HEADS.get(n) for n in names['DENSE_HEAD']},
        'kd_losses': {name: KD_LOSSES.get(name) for name in KD_LOSSES},
    }


def register(pcdet_registries):
    """Insert :func:`plugin_entries` into ``pcdet_registries`` (a mapping registry name -> dict).

    Registries missing from the mapping are skipped (``kd_losses`` is optional). Everything is checked before
    anything is inserted: a name already bound to a different object raises PluginConflictError and leaves
    every registry unchanged. Returns ``{registry: [inserted names]}``.
    """
    entries = plugin_entries()
    conflicts = []
    for reg_name, items in entries.items():
        registry = pcdet_registries.get(reg_name)
        if registry is None:
            continue
        for name, cls in items.items():
            old = registry.get(name)
            if old is not None and old is not cls:
                conflicts.append(f'{reg_name}[{name!r}] is {getattr(old, "__module__", "?")}.'
                                 f'{getattr(old, "__qualname__", old)}, not rdd\'s')
    if conflicts:
        raise PluginConflictError('rdd.plugin refuses to overwrite existing registry entries: ' + '; '.join(conflicts))
    inserted = {}
    for reg_name, items in entries.items():
        registry = pcdet_registries.get(reg_name)
        if registry is None:
            continue
        inserted[reg_name] = [n for n in items if n not in registry]
        registry.update(items)
    return inserted


def pcdet_registries():
    """pcdet's registry dicts, or None when ``pcdet.models`` cannot be imported (no CUDA ops, not installed)."""
    try:
        return {name: importlib.import_module(mod).__all__ for name, mod in PCDET_REGISTRY_MODULES.items()}
    except Exception as exc:  # ImportError, or OSError / RuntimeError from pcdet's compiled extensions
        _LOG.debug('pcdet not importable, rdd.plugin registers nothing: %s', exc)
        return None


def register_with_pcdet():
    """Register into pcdet when it is importable; returns what was inserted, or None."""
    if importlib.util.find_spec('pcdet') is None:
        return None
    regs = pcdet_registries()
    return None if regs is None else register(regs)


REGISTERED = register_with_pcdet()
