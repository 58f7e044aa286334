"""``write_synthetic_nuscenes``: a whole synthetic dataset in the nuScenes on-disk format.

Layout of ``root`` (the devkit's ``dataroot``; in OpenPCDet terms ``DATA_PATH / VERSION``)::

    root/<version>/{category,attribute,...,map}.json   the 13 tables
    root/<version>/splits.json                          train/val scene names (devkit custom-split format)
    root/<version>/synthetic.json                       generator parameters (marks the root as synthetic)
    root/samples/LIDAR_TOP/*.pcd.bin                    key-frame LiDAR, float32 (x, y, z, intensity, ring)
    root/sweeps/LIDAR_TOP/*.pcd.bin                     intermediate 20 Hz sweeps, same format
    root/samples/CAM_FRONT/*.jpg                        tiny camera stand-ins (OpenPCDet reads the records)
    root/maps/<token>.png                               map masks (tiny)

Scene names are taken from the devkit's own splits for ``v1.0-mini`` (``mini_train`` / ``mini_val``) and
``v1.0-trainval`` (``train`` / ``val``), so the devkit's official split selects exactly the synthetic train / val
scenes and OpenPCDet's tools, rdd's info creation and the devkit's evaluation run unchanged (for these official
versions ``splits.json`` only mirrors the official split; it is ignored unless passed explicitly, see
:mod:`rdd.datasets.nuscenes_splits`). Any other version name gets ``scene-synth-XXXX`` names and needs
``splits.json`` (its ``train`` / ``val`` splits).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass, field
from typing import List, Optional

from .lidar import LidarConfig
from .tables import LOCATIONS, TABLE_NAMES, static_tables, tiny_jpeg, tiny_map_png, token
from .writer import SceneSpec, write_scene

MARKER = "synthetic.json"


@dataclass
class SyntheticRoot:
    """What ``write_synthetic_nuscenes`` wrote."""
    root: str
    version: str
    train_scenes: List[str] = field(default_factory=list)
    val_scenes: List[str] = field(default_factory=list)
    split_file: str = ""
    num_samples: int = 0
    num_sweep_files: int = 0


def devkit_split_names() -> dict:
    """The devkit's hard-coded split lists (train, val, test, mini_train, mini_val), read from its splits.py
    source (importing ``nuscenes`` costs seconds: it pulls in matplotlib and scikit-learn)."""
    import ast
    import importlib.util
    spec = importlib.util.find_spec("nuscenes")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nuscenes-devkit is not installed (pip install nuscenes-devkit==1.2.0)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "utils", "splits.py")
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("train_detect", "train_track", "val", "test", "mini_train", "mini_val"):
                out[name] = ast.literal_eval(node.value)
    out["train"] = sorted(set(out.pop("train_detect") + out.pop("train_track")))  # as splits.py builds it
    return out


def scene_names(version: str, num_train: int, num_val: int) -> tuple:
    """Train and val scene names for ``version`` (real devkit split names for mini / trainval)."""
    splits = devkit_split_names()
    pools = {"v1.0-mini": (splits["mini_train"], splits["mini_val"]),
             "v1.0-trainval": (splits["train"], splits["val"])}
    if version not in pools:
        names = [f"scene-synth-{i:04d}" for i in range(num_train + num_val)]
        return names[:num_train], names[num_train:]
    train, val = pools[version]
    if num_train > len(train) or num_val > len(val):
        raise ValueError(f"version {version!r} has only {len(train)} train / {len(val)} val scene names; "
                         f"asked for {num_train} / {num_val} (use version 'v1.0-trainval' for more scenes)")
    return list(train[:num_train]), list(val[:num_val])


def clear_synthetic_root(root: str, version: str) -> None:
    """Remove what :func:`write_synthetic_nuscenes` (and the info / GT-database tools) wrote into ``root`` for
    ``version``; nothing when ``root/<version>`` does not exist. FileExistsError, touching nothing, when it is not
    a synthetic root (no ``synthetic.json`` marker)."""
    root = os.path.abspath(root)
    table_dir = os.path.join(root, version)
    if not os.path.exists(table_dir):
        return
    if not os.path.isfile(os.path.join(table_dir, MARKER)):
        raise FileExistsError(f"{table_dir} exists and is not a synthetic root (no {MARKER}); not touching it")
    for sub in (version, "samples", "sweeps", "maps", "gt_database_10sweeps_withvelo"):
        shutil.rmtree(os.path.join(root, sub), ignore_errors=True)
    for name in os.listdir(root):
        if name.startswith("nuscenes_") and name.endswith(".pkl"):
            os.remove(os.path.join(root, name))


def write_synthetic_nuscenes(root: str, num_scenes: int, seed: int = 0, samples_per_scene: int = 10,
                             version: str = "v1.0-trainval", val_fraction: float = 0.2,
                             lidar: Optional[LidarConfig] = None, workers: int = 1) -> SyntheticRoot:
    """Write a synthetic nuScenes-format dataset into ``root`` (see the module docstring for the layout).

    Args:
        num_scenes: scenes to write; ``max(1, round(num_scenes * val_fraction))`` of them (none if only one
            scene) go to the val split.
        seed: the same seed (and arguments) gives byte-identical files.
        samples_per_scene: key frames per scene (each with 9 preceding 20 Hz sweeps).
        lidar: sensor model (azimuth resolution, range, noise); default HDL-32E at 20 Hz.
        workers: processes writing scenes in parallel (the result does not depend on it).
    An existing ``root/<version>`` is a FileExistsError (:func:`clear_synthetic_root` removes a synthetic one).
    """
    if num_scenes < 1 or samples_per_scene < 1:
        raise ValueError(f"num_scenes ({num_scenes}) and samples_per_scene ({samples_per_scene}) must be >= 1")
    lidar = lidar or LidarConfig()
    root = os.path.abspath(root)
    table_dir = os.path.join(root, version)
    if os.path.exists(table_dir):
        raise FileExistsError(f"{table_dir} already exists; remove it first (clear_synthetic_root, or the tool's "
                              f"--overwrite)")
    num_val = 0 if num_scenes == 1 else min(num_scenes - 1, max(1, round(num_scenes * val_fraction)))
    train, val = scene_names(version, num_scenes - num_val, num_val)
    for sub in (version, "samples/LIDAR_TOP", "sweeps/LIDAR_TOP", "samples/CAM_FRONT", "maps"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    jpeg = tiny_jpeg()
    specs = [SceneSpec(root=root, seed=seed, index=i, name=name, location=LOCATIONS[i % len(LOCATIONS)],
                       samples=samples_per_scene, lidar=lidar, jpeg=jpeg) for i, name in enumerate(train + val)]
    tables = _tables(root, seed, specs, _write_scenes(specs, workers))
    for name in TABLE_NAMES:
        with open(os.path.join(table_dir, f"{name}.json"), "w") as f:
            json.dump(tables[name], f, indent=0)
    split = {"train": train, "val": val}
    if version == "v1.0-mini":
        split.update(mini_train=train, mini_val=val)
    split_file = os.path.join(table_dir, "splits.json")
    with open(split_file, "w") as f:
        json.dump(split, f, indent=1)
    meta = dict(generator="rdd.datasets.synthetic", seed=seed, num_scenes=num_scenes,
                samples_per_scene=samples_per_scene, version=version, val_fraction=val_fraction,
                lidar=dataclasses.asdict(lidar))
    with open(os.path.join(table_dir, MARKER), "w") as f:
        json.dump(meta, f, indent=1)
    num_sweeps = sum(1 for rec in tables["sample_data"] if rec["fileformat"] == "pcd")
    return SyntheticRoot(root=root, version=version, train_scenes=train, val_scenes=val, split_file=split_file,
                         num_samples=len(tables["sample"]), num_sweep_files=num_sweeps)


def _write_scenes(specs, workers):
    """Every scene's table records (in ``specs`` order), written by ``workers`` processes."""
    if workers > 1 and len(specs) > 1:
        with mp.get_context("spawn").Pool(min(workers, len(specs))) as pool:
            return pool.map(write_scene, specs, chunksize=1)
    return [write_scene(s) for s in specs]


def _tables(root, seed, specs, parts) -> dict:
    """All 13 tables: the static ones, the scenes' records, and one map (with its PNG) per location."""
    tables = static_tables(seed)
    for name in ("instance", "calibrated_sensor", "ego_pose", "log", "scene", "sample", "sample_data",
                 "sample_annotation"):
        tables[name] = [rec for part in parts for rec in part[name]]
    tables["map"] = []
    for loc in sorted({s.location for s in specs}):
        map_tok = token(seed, "map", loc)
        filename = f"maps/{map_tok}.png"
        with open(os.path.join(root, filename), "wb") as f:
            f.write(tiny_map_png())
        tables["map"].append(dict(token=map_tok, category="semantic_prior", filename=filename,
                                  log_tokens=[p["log"][0]["token"] for p, s in zip(parts, specs) if s.location == loc]))
    return tables
