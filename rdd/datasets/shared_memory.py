"""Batches from DataLoader workers through shared memory: the large numeric arrays of a collated batch (points,
voxels) are written once into shared-memory tensors in the worker and mapped by the main process, instead of being
pickled through a pipe (several copies, deserialised in the main process). The batches stay numpy dicts."""
import functools

import numpy as np

_SHARED_MIN_BYTES = 1 << 16


class SharedArray:
    """A numpy array travelling from a DataLoader worker as a torch tensor in shared memory (the main process maps
    it) instead of being pickled through a pipe (several copies, serialised in the main process)."""
    __slots__ = ('tensor',)

    def __init__(self, tensor):
        self.tensor = tensor


class _SharedAllocator:
    """``alloc(shape, dtype)`` for ``collate_batch``: numpy views of new shared-memory tensors (remembered)."""

    def __init__(self):
        self.tensors = {}

    def __call__(self, shape, dtype):
        import torch
        tensor = torch.from_numpy(np.empty(0, dtype=dtype)).new_empty(shape).share_memory_()
        array = tensor.numpy()
        self.tensors[id(array)] = (array, tensor)
        return array


def collate_for_workers(collate_fn, batch_list):
    """``collate_fn(batch_list)`` (given shared-memory output arrays when it takes ``alloc``) with its large numeric
    numpy arrays wrapped in :class:`SharedArray`: written once, handed over without a copy."""
    import inspect

    import torch
    alloc = _SharedAllocator()
    takes_alloc = 'alloc' in inspect.signature(collate_fn).parameters
    batch = collate_fn(batch_list, alloc=alloc) if takes_alloc else collate_fn(batch_list)
    out = {}
    for key, val in batch.items():
        shared = alloc.tensors.get(id(val))
        if shared is not None and shared[0] is val:
            out[key] = SharedArray(shared[1])
        elif isinstance(val, np.ndarray) and val.dtype.kind in 'biuf' and val.nbytes >= _SHARED_MIN_BYTES:
            out[key] = SharedArray(torch.from_numpy(val))
        else:
            out[key] = val
    return out


class SharedMemoryBatches:
    """Iterator over a worker-backed DataLoader that unwraps :class:`SharedArray` values to numpy (zero-copy)."""

    def __init__(self, inner):
        self._inner = inner

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._inner)
        return {k: v.tensor.numpy() if isinstance(v, SharedArray) else v for k, v in batch.items()}

    def __len__(self):
        return len(self._inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@functools.lru_cache(maxsize=None)
def shared_memory_dataloader_class():
    from torch.utils.data import DataLoader

    class SharedMemoryDataLoader(DataLoader):
        """DataLoader whose workers hand large batch arrays over in shared memory; batches are numpy as always."""

        def __iter__(self):
            inner = super().__iter__()
            return SharedMemoryBatches(inner) if self.num_workers > 0 else inner

    return SharedMemoryDataLoader
