"""spconv's CPU point-to-voxel kernel with caller-owned outputs: no torch ops, one hash table per grid.

spconv's ``PointToVoxel`` keeps its output buffers, zeroes the whole voxel buffer (``max_num_voxels`` rows) on
every call and returns torch ``clone()``s of the used rows. torch parallelises those copies over its intra-op
threads, which on a busy machine made a 2-thread main process voxelize several times slower than a 1-thread one.
Here the same kernel (``SpconvOps.point2voxel_cpu``, spconv 2.3.x) writes into fresh zero-filled numpy arrays
(the untouched tail of a fresh allocation is never paged in) and returns views of the used rows: no copy, no
memset of the whole buffer, no torch op, so the cost does not depend on the torch thread count. The kernel also
gives every point's voxel id (-1 = none), from which dropped points are counted without a second pass.

The dense hash table (one int32 per grid cell, ~316 MiB on the nuScenes 0.075 m grid) is the only large state; the
kernel resets the cells it used before returning. :func:`cpu_point_to_voxel` keeps one table per grid and process
(train / test / teacher voxelizers on the same grid share it; a DataLoader worker builds its own on first use).
Calls on one table are serialised by a lock.
"""
import threading

import numpy as np
from cumm import tensorview as tv

from rdd.ops.spconv_compat import spconv  # noqa: F401  (applies the spconv patches first)
from spconv.core_cc.csrc.sparse.all import SpconvOps

__all__ = ['CpuPointToVoxel', 'cpu_point_to_voxel']

_TABLES = {}
_TABLES_LOCK = threading.Lock()


def _tv(array):
    return tv.from_numpy(array)  # zero-copy view


class CpuPointToVoxel:
    """Hard voxelization of float32 points on CPU.

    Args:
        voxel_size (3,): metres along x, y, z.
        point_cloud_range (6,): ``[x_min, y_min, z_min, x_max, y_max, z_max]`` metres.
    """

    def __init__(self, voxel_size, point_cloud_range):
        vsize, grid, stride, crange = SpconvOps.calc_point2voxel_meta_data(
            [float(v) for v in voxel_size], [float(v) for v in point_cloud_range])
        self._meta = (vsize, grid, stride, crange)
        self.grid_size_zyx = tuple(int(g) for g in grid)
        self._hash = np.full(self.grid_size_zyx, -1, dtype=np.int32)
        self._lock = threading.Lock()

    def __call__(self, points, max_num_voxels, max_points_per_voxel):
        """Voxelize ``points`` (N, C) float32, C-contiguous (x, y, z first).

        Returns ``voxels (V, P, C)`` float32 zero-padded, ``coords (V, 3)`` int32 ``[z, y, x]``,
        ``num_points (V,)`` int32 (views into fresh arrays) and ``point_voxel_id (N,)`` int64 (-1: outside the
        grid or dropped because ``max_num_voxels`` was reached). Voxels are numbered in order of their first
        point; each keeps its first ``max_points_per_voxel`` points in input order.
        """
        if points.dtype != np.float32 or points.ndim != 2 or not points.flags.c_contiguous:
            raise ValueError(f'CpuPointToVoxel needs C-contiguous float32 points (N, C), got {points.dtype} '
                             f'{points.shape}')
        num_features = points.shape[1]
        voxels = np.zeros((max_num_voxels, max_points_per_voxel, num_features), dtype=np.float32)
        coords = np.zeros((max_num_voxels, 3), dtype=np.int32)
        num = np.zeros((max_num_voxels,), dtype=np.int32)
        point_voxel_id = np.empty((points.shape[0],), dtype=np.int64)
        with self._lock:
            res = SpconvOps.point2voxel_cpu(_tv(points), _tv(voxels), _tv(coords), _tv(num), _tv(self._hash),
                                            _tv(point_voxel_id), *self._meta, False, False)
        count = int(res[0].shape[0])
        return voxels[:count], coords[:count], num[:count], point_voxel_id


def cpu_point_to_voxel(voxel_size, point_cloud_range):
    """The process's :class:`CpuPointToVoxel` for this grid (built on first use)."""
    key = (tuple(float(v) for v in voxel_size), tuple(float(v) for v in point_cloud_range))
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is None:
            table = _TABLES[key] = CpuPointToVoxel(*key)
    return table
