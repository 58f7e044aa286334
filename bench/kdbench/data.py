"""The benchmark's synthetic nuScenes-format set: written once (generator + info files + GT database), checked
against the protocol, and fingerprinted for the teacher cache and the run keys."""
import hashlib
import json
import os

INFO_NAMES = ('nuscenes_infos_10sweeps_train.pkl', 'nuscenes_infos_10sweeps_val.pkl')
MARKER = 'synthetic.json'  # rdd.datasets.synthetic writes it into <root>/<version>/


def devkit_root(spec):
    """The devkit dataroot ``spec.root / spec.version`` (OpenPCDet: ``DATA_PATH / VERSION``)."""
    return spec.root / spec.version


def expected_meta(spec):
    """The generator parameters ``synthetic.json`` must hold for ``spec``."""
    return {'seed': spec.seed, 'num_scenes': spec.scenes, 'samples_per_scene': spec.samples_per_scene,
            'version': spec.version, 'val_fraction': spec.val_fraction,
            'azimuth_res_deg': spec.azimuth_res_deg}


def read_meta(spec):
    """``expected_meta``'s keys as found on disk, or None when no synthetic set is there."""
    path = devkit_root(spec) / spec.version / MARKER
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    out = {k: meta.get(k) for k in ('seed', 'num_scenes', 'samples_per_scene', 'version', 'val_fraction')}
    out['azimuth_res_deg'] = (meta.get('lidar') or {}).get('azimuth_res_deg')
    return out


def ensure_data(spec, log=print, workers=2):
    """Write the set of ``spec`` unless it is there; ValueError naming the folder when another set is there."""
    from rdd.datasets.gt_database import create_groundtruth_database
    from rdd.datasets.nuscenes_infos import create_nuscenes_infos
    from rdd.datasets.synthetic import LidarConfig, clear_synthetic_root, write_synthetic_nuscenes
    root = devkit_root(spec)
    meta, want = read_meta(spec), expected_meta(spec)
    if meta is not None and meta != want:
        raise ValueError(f'{root} holds a synthetic set with {meta}; the protocol asks for {want}. Delete the folder '
                         f'or choose another data root')
    if meta is None:
        log(f'writing the synthetic set ({spec.scenes} scenes x {spec.samples_per_scene} samples, seed {spec.seed}) '
            f'to {root}')
        clear_synthetic_root(str(root), spec.version)  # a half-written set of an interrupted run
        write_synthetic_nuscenes(str(root), spec.scenes, seed=spec.seed, samples_per_scene=spec.samples_per_scene,
                                 version=spec.version, val_fraction=spec.val_fraction,
                                 lidar=LidarConfig(azimuth_res_deg=spec.azimuth_res_deg), workers=workers)
    if not all((root / name).is_file() for name in INFO_NAMES):
        log('creating the info files and the GT database')
        paths = create_nuscenes_infos(str(root), spec.version, max_sweeps=10)
        create_groundtruth_database(str(root), paths['train'], max_sweeps=10)
    return root


def fingerprint(spec):
    """12 hex digits identifying the set: the generator parameters and the bytes of the info files (which hold
    every box and every LiDAR file name). ValueError when the set is not there."""
    root = devkit_root(spec)
    digest = hashlib.sha256(json.dumps(read_meta(spec), sort_keys=True).encode())
    for name in INFO_NAMES:
        path = root / name
        if not path.is_file():
            raise ValueError(f'{path} is missing: the benchmark data is not ready')
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temp file in the same folder and ``os.replace`` (never partial)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
