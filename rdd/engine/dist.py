"""Process-group helpers for ``torchrun`` launches (``--launcher pytorch``).

torchrun sets ``LOCAL_RANK``, ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; we read them from the
environment (never from a ``--local_rank`` flag) and take the world size from the initialised process group.
Backend: ``nccl`` when CUDA is available, ``gloo`` otherwise.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: ``distributed`` False means a plain single-process run."""
    distributed: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self):
        return self.rank == 0


def _env_int(name):
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(f'--launcher pytorch needs the environment variable {name} (start the job with torchrun)')
    try:
        return int(value)
    except ValueError as exc:
        raise RuntimeError(f'environment variable {name}={value!r} is not an integer') from exc


def init_distributed(launcher='none', backend=None, timeout_s=1800):
    """Initialise the process group for ``launcher`` ('none' or 'pytorch') and pick this process's device.

    Returns a :class:`DistInfo`. With 'pytorch' the backend defaults to ``nccl`` on CUDA, ``gloo`` on CPU, and
    ``world_size`` is read back from the process group.
    """
    use_cuda = torch.cuda.is_available()
    if launcher == 'none':
        return DistInfo(device=torch.device('cuda', 0) if use_cuda else torch.device('cpu'))
    if launcher != 'pytorch':
        raise ValueError(f"unknown launcher {launcher!r}; expected 'none' or 'pytorch'")
    local_rank = _env_int('LOCAL_RANK')
    _env_int('RANK'), _env_int('WORLD_SIZE')  # checked here for a clear error; the group reads them
    backend = backend or ('nccl' if use_cuda else 'gloo')
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if not dist.is_initialized():
        import datetime
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    device = torch.device('cuda', local_rank % torch.cuda.device_count()) if use_cuda else torch.device('cpu')
    return DistInfo(distributed=True, rank=dist.get_rank(), local_rank=local_rank,
                    world_size=dist.get_world_size(), device=device)


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def barrier():
    if is_dist():
        dist.barrier()


def per_process_batch_size(total_batch_size, world_size):
    """Split the total ``--batch_size`` over ``world_size`` processes; error when it does not divide."""
    if total_batch_size < 1:
        raise ValueError(f'--batch_size must be positive, got {total_batch_size}')
    if total_batch_size % world_size != 0:
        raise ValueError(f'--batch_size {total_batch_size} (the total over all processes) is not divisible by '
                         f'the world size {world_size}')
    return total_batch_size // world_size


def all_gather_object(obj):
    """List of ``obj`` from every rank (in rank order); ``[obj]`` when not distributed. No shared filesystem."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_across_ranks(flag, device=None):
    """True when ``flag`` is true on any rank (so every rank takes the same branch)."""
    if not is_dist():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device or 'cpu')
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_across_ranks(value, device=None):
    """Mean of a Python float over ranks (for logging only)."""
    if not is_dist():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device or 'cpu')
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def cleanup():
    """Tear the process group down on every rank together. Without the barrier a rank that finished early (rank
    1 while rank 0 runs the devkit evaluation) destroyed its gloo group under a peer still connected, and was
    seen to abort with ``terminate called without an active exception`` (SIGABRT, exit code -6)."""
    if is_dist():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
