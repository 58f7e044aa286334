"""One small generic registry (the shape of fvcore's ``Registry``), used for detectors, model sections, KD losses
and datasets.

    DETECTORS = Registry('detector', config_key='MODEL.NAME')

    @DETECTORS.register()            # under the class's own name
    class CenterPoint(...): ...

    DETECTORS.register(MyDetector, name='Mine')   # or explicitly
    cls = DETECTORS.get('CenterPoint')            # RegistryError listing the known names when absent

Registering a name twice with a different object raises :class:`rdd.errors.RegistryError` (no silent
overwrite); registering the same class again (e.g. a module re-import with the same qualified name) is allowed.
"""
from typing import Callable, Dict, Iterator, Optional

from rdd.errors import RegistryError

__all__ = ['Registry']


def _qualname(obj) -> str:
    return f'{getattr(obj, "__module__", "?")}.{getattr(obj, "__qualname__", repr(obj))}'


class Registry:
    """Maps names to classes (or callables).

    Args:
        name: what the registry holds, for messages (e.g. ``'KD loss'``).
        config_key: the config key whose value is looked up (e.g. ``'MODEL.KD_LOSSES[i].NAME'``), for messages.
        hint: appended to the unknown-name error (e.g. where else names get registered).
    """

    def __init__(self, name: str, config_key: Optional[str] = None, hint: Optional[str] = None):
        self.name = name
        self.config_key = config_key
        self.hint = hint
        self._objects: Dict[str, Callable] = {}

    def _add(self, name: str, obj: Callable) -> None:
        old = self._objects.get(name)
        if old is not None and old is not obj and _qualname(old) != _qualname(obj):
            raise RegistryError(f'{self.name} {name!r} is already registered by {_qualname(old)}; '
                                f'cannot register {_qualname(obj)} under the same name')
        self._objects[name] = obj

    def register(self, obj: Optional[Callable] = None, name: Optional[str] = None):
        """``@register()`` / ``@register(name='X')`` as a decorator, or ``register(obj, name=None)`` directly.

        The name defaults to ``obj.__name__``. Returns ``obj`` (so the decorator leaves the class unchanged).
        """
        if obj is None:
            def deco(o):
                self._add(name or o.__name__, o)
                return o
            return deco
        self._add(name or obj.__name__, obj)
        return obj

    def get(self, name: str) -> Callable:
        """The object registered as ``name``; :class:`RegistryError` naming the key and listing known names."""
        if name not in self._objects:
            key = f'{self.config_key} ' if self.config_key else ''
            hint = f' ({self.hint})' if self.hint else ''
            raise RegistryError(f'unknown {self.name} {key}{name!r}; known: {sorted(self._objects)}{hint}')
        return self._objects[name]

    def __contains__(self, name) -> bool:
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._objects))

    def __len__(self) -> int:
        return len(self._objects)

    def names(self):
        """Sorted registered names."""
        return sorted(self._objects)

    def __repr__(self):
        return f'Registry({self.name!r}, {self.names()})'
