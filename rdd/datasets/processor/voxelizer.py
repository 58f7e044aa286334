"""Hard voxelization with spconv's kernel, usable inside and outside the dataset.

On CPU (numpy arrays or CPU tensors) the :class:`Voxelizer` runs spconv's point-to-voxel kernel through
:mod:`rdd.ops.point_to_voxel`: outputs are fresh arrays (no copy of reused buffers, no torch op, so the cost does
not depend on the torch thread count) and the ~316 MiB hash table is built once per grid and process (each
DataLoader worker builds its own on first use; it is never pickled). On CUDA it uses spconv's ``PointToVoxel``,
built lazily once per device. Both keep, per voxel, the first ``max_points_per_voxel`` points in input order and
silently drop the points of new voxels once ``max_num_voxels`` is reached: the ``Voxelizer`` counts those points
(``num_dropped_points``, ``num_overflow_calls``) and logs a warning (at the 1st, 2nd, 4th, ... overflow, with the
running totals, so long runs are not flooded). Points beyond ``max_points_per_voxel`` in a voxel are dropped by
design and not counted.
"""
import importlib
import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)


class Voxelizer:
    """Points -> voxels on a regular grid.

    Args:
        voxel_size (3,): metres along x, y, z.
        point_cloud_range (6,): ``[x_min, y_min, z_min, x_max, y_max, z_max]`` metres.
        num_point_features (int): channels C of the input points (the first 3 are x, y, z).
        max_points_per_voxel (int): P, points kept per voxel (the first ones in input order).
        max_num_voxels (int): V_max, voxels kept per call (the first ones created in input order).
    """

    def __init__(self, voxel_size, point_cloud_range, num_point_features, max_points_per_voxel, max_num_voxels):
        self.voxel_size = [float(v) for v in voxel_size]
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        self.num_point_features = int(num_point_features)
        self.max_points_per_voxel = int(max_points_per_voxel)
        self.max_num_voxels = int(max_num_voxels)
        pcr = np.asarray(self.point_cloud_range)
        self.grid_size = np.round((pcr[3:6] - pcr[0:3]) / np.asarray(self.voxel_size)).astype(np.int64)
        self.num_dropped_points = 0
        self.num_overflow_calls = 0
        self._generators = {}

    @classmethod
    def from_processor_config(cls, entry, point_cloud_range, num_point_features, mode):
        """Build from a ``transform_points_to_voxels`` processor entry (``VOXEL_SIZE``,
        ``MAX_POINTS_PER_VOXEL``, ``MAX_NUMBER_OF_VOXELS`` as a number or a ``{'train', 'test'}`` dict read for
        ``mode``)."""
        max_voxels = entry['MAX_NUMBER_OF_VOXELS']
        max_voxels = max_voxels[mode] if isinstance(max_voxels, dict) else max_voxels
        return cls(entry['VOXEL_SIZE'], point_cloud_range, num_point_features, entry['MAX_POINTS_PER_VOXEL'],
                   max_voxels)

    def __getstate__(self):
        d = dict(self.__dict__)
        d['_generators'] = {}
        return d

    def _cuda_generator(self, device):
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            from rdd.ops.spconv_compat import spconv  # lazy: spconv is heavy; only its PointToVoxel is used
            point_to_voxel = importlib.import_module(spconv.__name__ + '.utils').PointToVoxel
            gen = point_to_voxel(vsize_xyz=self.voxel_size, coors_range_xyz=self.point_cloud_range,
                                 num_point_features=self.num_point_features, max_num_voxels=self.max_num_voxels,
                                 max_num_points_per_voxel=self.max_points_per_voxel, device=torch.device(device))
            self._generators[key] = gen
        return gen

    def _in_grid(self, xyz):
        """``(N,)`` bool: points whose voxel index lies inside the grid (numpy ``(N, 3)`` float32)."""
        pcr = np.asarray(self.point_cloud_range, dtype=np.float32)
        cell = np.floor((xyz - pcr[:3]) / np.asarray(self.voxel_size, dtype=np.float32))
        return ((cell >= 0) & (cell < self.grid_size)).all(axis=1)

    def __call__(self, points):
        """Voxelize one cloud.

        Args:
            points: ``(N, C)`` float numpy array or torch tensor (any device).
        Returns:
            voxels ``(V, P, C)`` float32 (zero-padded), coords ``(V, 3)`` int32 as ``[z, y, x]`` voxel indices,
            num_points ``(V,)`` int32; numpy arrays for numpy input, tensors on the input's device otherwise.
        """
        if isinstance(points, np.ndarray) or points.device.type == 'cpu':
            is_numpy = isinstance(points, np.ndarray)
            pts = np.ascontiguousarray(points if is_numpy else points.detach().numpy(), dtype=np.float32)
            self._check_shape(pts.shape)
            from rdd.ops.point_to_voxel import cpu_point_to_voxel  # lazy: imports spconv (heavy)
            table = cpu_point_to_voxel(self.voxel_size, self.point_cloud_range)
            voxels, coords, num, point_voxel_id = table(pts, self.max_num_voxels, self.max_points_per_voxel)
            if len(voxels) >= self.max_num_voxels:
                self._account_overflow(int((self._in_grid(pts[:, :3]) & (point_voxel_id < 0)).sum()))
            if is_numpy:
                return voxels, coords, num
            return torch.from_numpy(voxels), torch.from_numpy(coords), torch.from_numpy(num)
        pts = points.detach().float().contiguous()
        self._check_shape(tuple(pts.shape))
        gen = self._cuda_generator(pts.device)
        voxels, coords, num, point_voxel_id = gen.generate_voxel_with_id(pts)
        if voxels.data_ptr() == gen.voxels.data_ptr():  # views of the reused buffers (older spconv): copy
            voxels, coords, num = voxels.clone(), coords.clone(), num.clone()
        if voxels.shape[0] >= self.max_num_voxels:
            in_grid = self._in_grid(pts[:, :3].cpu().numpy())
            self._account_overflow(int((in_grid & (point_voxel_id < 0).cpu().numpy()).sum()))
        return voxels, coords, num

    def _check_shape(self, shape):
        if len(shape) != 2 or shape[1] != self.num_point_features:
            raise ValueError(f'Voxelizer expects points (N, {self.num_point_features}), got {tuple(shape)}')

    def _account_overflow(self, dropped):
        """Count ``dropped`` in-range points that got no voxel because ``max_num_voxels`` was reached."""
        if dropped > 0:
            self.num_dropped_points += dropped
            self.num_overflow_calls += 1
            if self.num_overflow_calls & (self.num_overflow_calls - 1):
                return  # log the 1st, 2nd, 4th, 8th, ... overflow only
            logger.warning('Voxelizer: max_num_voxels=%d reached, %d in-range points dropped (%d clouds so far, '
                           '%d points in total); raise MAX_NUMBER_OF_VOXELS to keep them',
                           self.max_num_voxels, dropped, self.num_overflow_calls, self.num_dropped_points)


def voxelize_batch(points, voxelizer):
    """Voxelize a batch of clouds.

    Args:
        points: ``(N, 1 + C)`` torch tensor, column 0 the batch index (as in batch_dict['points']).
        voxelizer: a :class:`Voxelizer` with ``num_point_features == C``.
    Returns:
        voxels ``(V, P, C)``, voxel_coords ``(V, 4)`` int32 ``[b, z, y, x]``, voxel_num_points ``(V,)`` int32,
        on the device of ``points``.
    """
    if not isinstance(points, torch.Tensor):
        points = torch.as_tensor(points)
    b_idx = points[:, 0].long()
    batch_size = int(b_idx.max().item()) + 1 if points.shape[0] else 0
    out_v, out_c, out_n = [], [], []
    for b in range(batch_size):
        v, c, n = voxelizer(points[b_idx == b, 1:])
        out_v.append(v)
        out_c.append(torch.cat([torch.full_like(c[:, :1], b), c], dim=1))
        out_n.append(n)
    if not out_v:
        c = voxelizer.num_point_features
        return (points.new_zeros((0, voxelizer.max_points_per_voxel, c)),
                torch.zeros((0, 4), dtype=torch.int32, device=points.device),
                torch.zeros((0,), dtype=torch.int32, device=points.device))
    return torch.cat(out_v), torch.cat(out_c).int(), torch.cat(out_n)
