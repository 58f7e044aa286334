"""nuScenes LiDAR point files (``.pcd.bin``: float32 ``x, y, z, intensity, ring``) read into one array.

:func:`load_lidar_with_sweeps` merges a key frame and its sweeps as OpenPCDet does, with one copy of each point:
every file is read straight into its rows of one preallocated ``(N, 5)`` float32 array (the 5th column, the ring
index, is overwritten by the time lag), sweep points within 1 m of the sensor in x and y are compacted away in
place, and each sweep's 4 x 4 ``transform_matrix`` is applied with one matrix product (in float64, like
OpenPCDet, then stored as float32).

Points with a non-finite ``x, y, z`` or intensity are dropped, and a warning names the file and counts them
(OpenPCDet keeps them, and one NaN then poisons a whole training step).
"""
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

NUM_FILE_FEATURES = 5  # x, y, z, intensity, ring (nuScenes .pcd.bin)


def lidar_point_count(path, num_features=NUM_FILE_FEATURES):
    """Number of points in the ``.bin`` file at ``path``; clear errors for missing or truncated files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'LiDAR file not found: {path}')
    size = path.stat().st_size
    if size % (4 * num_features):
        raise ValueError(f'LiDAR file {path} has {size} bytes, not a multiple of {4 * num_features} '
                         f'({num_features} float32 per point): truncated or not a nuScenes .pcd.bin')
    return size // (4 * num_features)


def read_points_bin(path, num_features=NUM_FILE_FEATURES, out=None):
    """Read a float32 ``.bin`` LiDAR file as ``(N, num_features)``, into ``out`` (C-contiguous rows) when given."""
    count = lidar_point_count(path, num_features)
    if out is None:
        out = np.empty((count, num_features), dtype=np.float32)
    if out.shape != (count, num_features) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f'read_points_bin: out must be C-contiguous float32 {(count, num_features)} for {path}, '
                         f'got {out.dtype} {out.shape}')
    if count == 0:
        return out
    with open(path, 'rb') as f:
        got = f.readinto(memoryview(out).cast('B'))
    if got != out.nbytes:
        raise ValueError(f'LiDAR file {path}: read {got} of {out.nbytes} bytes (file changed while reading?)')
    return out


def finite_rows(points, path, log=None):
    """``(N,)`` bool of the rows whose first 4 values are finite, or None when all are; logs the count."""
    if np.isfinite(points[:, :4]).all():
        return None
    keep = np.isfinite(points[:, :4]).all(axis=1)
    (log or logger).warning('LiDAR file %s: dropped %d of %d points with non-finite x, y, z or intensity',
                            path, int((~keep).sum()), len(points))
    return keep


def load_lidar_with_sweeps(key_path, sweeps, root, log=None):
    """Key frame + sweeps -> ``(N, 5)`` float32 ``x, y, z, intensity, time_lag`` in the key-frame LiDAR frame.

    Args:
        key_path: the key frame's ``.pcd.bin`` (time lag 0, all its points kept).
        sweeps: OpenPCDet sweep records in merge order: ``lidar_path`` (relative to ``root``),
            ``transform_matrix`` (4 x 4 into the key frame; None = already there), ``time_lag`` (s).
        root: version root the sweep paths are relative to.
        log: logger for dropped non-finite points.
    """
    paths = [Path(key_path)] + [Path(root) / s['lidar_path'] for s in sweeps]
    counts = [lidar_point_count(p) for p in paths]
    out = np.empty((sum(counts), NUM_FILE_FEATURES), dtype=np.float32)
    end = 0
    for k, (path, count) in enumerate(zip(paths, counts)):
        rows = read_points_bin(path, out=out[end:end + count])
        keep = finite_rows(rows, path, log)
        if k > 0:  # sweeps lose the points within 1 m of the sensor (the key frame keeps them, as in OpenPCDet)
            far = ~((np.abs(rows[:, 0]) < 1.0) & (np.abs(rows[:, 1]) < 1.0))
            keep = far if keep is None else keep & far
        if keep is not None:
            rows = _compact(rows, keep)
        if k > 0 and sweeps[k - 1].get('transform_matrix') is not None:
            tm = np.asarray(sweeps[k - 1]['transform_matrix'], dtype=np.float64)
            rows[:, :3] = rows[:, :3].astype(np.float64) @ tm[:3, :3].T + tm[:3, 3]
        rows[:, 4] = sweeps[k - 1]['time_lag'] if k > 0 else 0.0
        end += len(rows)
    return out[:end]


def _compact(rows, keep):
    """Move the kept rows to the front of ``rows`` (order kept); returns the view of them."""
    n = int(keep.sum())
    if n < len(rows):
        rows[:n] = rows[keep]
    return rows[:n]
