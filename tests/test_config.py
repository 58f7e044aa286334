"""Config loading: _BASE_CONFIG_ resolution, merge semantics, --set overrides, schema errors."""
from pathlib import Path

import pytest

from rdd.config import ROOT_DIR, ConfigError, cfg_from_list, cfg_from_yaml_file

CONFIGS = ROOT_DIR / "configs"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_teacher_config_matches_openpcdet_values():
    cfg = cfg_from_yaml_file(CONFIGS / "cp_voxel_0075.yaml")
    assert cfg.CLASS_NAMES[0] == "car" and len(cfg.CLASS_NAMES) == 10
    assert cfg.DATA_CONFIG.POINT_CLOUD_RANGE == [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
    assert cfg.DATA_CONFIG.DATA_PROCESSOR[-1].VOXEL_SIZE == [0.075, 0.075, 0.2]
    assert cfg.DATA_CONFIG.MAX_SWEEPS == 10  # from the dataset base
    assert len(cfg.MODEL.DENSE_HEAD.CLASS_NAMES_EACH_HEAD) == 6
    assert cfg.MODEL.DENSE_HEAD.POST_PROCESSING.NMS_CONFIG.NMS_THRESH == 0.2
    assert Path(cfg.DATA_CONFIG._BASE_CONFIG_).is_absolute()
    assert cfg.CFG_FILE == str((CONFIGS / "cp_voxel_0075.yaml").resolve())


# size -> (BACKBONE_3D as written, NUM_FILTERS, NUM_UPSAMPLE_FILTERS, SHARED_CONV_CHANNEL, NUM_BEV_FEATURES),
# SparseKD's widths {3D, BEV, head} of DESIGN.md section 3 worked out by hand: S {1, .5, .5}, XS {.75, .5, .5},
# XXS {.5, .25, .25} of the teacher's [16..128] 3D filters, [128, 256] / [256, 256] BEV filters, 64 head channels.
STUDENTS = {
    "s": ({"NAME": "VoxelResBackBone8x"}, [64, 128], [128, 128], 32, 256),
    "xs": ({"NAME": "VoxelResBackBone8xWidth", "WIDTH": 0.75}, [64, 128], [128, 128], 32, 192),
    "xxs": ({"NAME": "VoxelResBackBone8xWidth", "WIDTH": 0.5}, [32, 64], [64, 64], 16, 128),
}


@pytest.mark.parametrize("size", sorted(STUDENTS))
@pytest.mark.parametrize("grid,teacher_file", [("", "cp_voxel_01.yaml"), ("_0075", "cp_voxel_0075.yaml")])
def test_student_configs_override_only_widths(size, grid, teacher_file):
    """cp_voxel_{s,xs,xxs}.yaml are students of the 0.1 m teacher, the _0075 ones of the 0.075 m teacher: the
    teacher's config with only the width keys changed, written as OpenPCDet reads them (no WIDTH on OpenPCDet's
    own class names), and the paper's protocol: LR 0.001 (1e-4 -> 1e-3 -> 1e-8), and for the 0.1 m students the
    top-100 no-NMS evaluation."""
    teacher = cfg_from_yaml_file(CONFIGS / teacher_file)
    cfg = cfg_from_yaml_file(CONFIGS / f"cp_voxel_{size}{grid}.yaml")
    backbone_3d, filters, up_filters, shared, bev = STUDENTS[size]
    assert {k: v for k, v in cfg.MODEL.BACKBONE_3D.items()} == backbone_3d
    assert cfg.MODEL.BACKBONE_2D.NAME == "BaseBEVBackbone" and "WIDTH" not in cfg.MODEL.BACKBONE_2D
    assert cfg.MODEL.BACKBONE_2D.NUM_FILTERS == filters
    assert cfg.MODEL.BACKBONE_2D.NUM_UPSAMPLE_FILTERS == up_filters
    assert cfg.MODEL.DENSE_HEAD.SHARED_CONV_CHANNEL == shared
    assert cfg.MODEL.MAP_TO_BEV.NUM_BEV_FEATURES == bev
    # everything else inherited unchanged from the teacher of the same grid
    for section, keys in (("BACKBONE_3D", ("NAME", "WIDTH")), ("MAP_TO_BEV", ("NUM_BEV_FEATURES",)),
                          ("BACKBONE_2D", ("NUM_FILTERS", "NUM_UPSAMPLE_FILTERS")),
                          ("DENSE_HEAD", ("SHARED_CONV_CHANNEL",))):
        for key in keys:
            cfg.MODEL[section].pop(key, None)
            teacher.MODEL[section].pop(key, None)
    post, teacher_post = cfg.MODEL.DENSE_HEAD.POST_PROCESSING, teacher.MODEL.DENSE_HEAD.POST_PROCESSING
    if grid == "":  # the paper's evaluation; OpenPCDet's own teacher config keeps its rotated NMS
        assert (post.NMS_CONFIG.NMS_TYPE, post.MAX_OBJ_PER_SAMPLE) == ("none", 100)
        assert (teacher_post.NMS_CONFIG.NMS_TYPE, teacher_post.MAX_OBJ_PER_SAMPLE) == ("nms_gpu", 500)
        post.NMS_CONFIG.NMS_TYPE, post.MAX_OBJ_PER_SAMPLE = "nms_gpu", 500
    assert cfg.MODEL == teacher.MODEL
    assert cfg.DATA_CONFIG == teacher.DATA_CONFIG
    assert (cfg.OPTIMIZATION.LR, teacher.OPTIMIZATION.LR) == (0.001, 0.003)  # the paper's schedule / OpenPCDet's
    cfg.OPTIMIZATION.LR = teacher.OPTIMIZATION.LR
    assert cfg.OPTIMIZATION == teacher.OPTIMIZATION


@pytest.mark.parametrize("section,text,hint", [
    ("BACKBONE_2D", "        WIDTH: 0.5\n",
     r"NUM_FILTERS: \[64, 128\], NUM_UPSAMPLE_FILTERS: \[128, 128\] for WIDTH 0\.5.*BaseBEVBackboneWidth"),
    ("BACKBONE_3D", "        WIDTH: 0.75\n", "VoxelResBackBone8xWidth"),
    ("BACKBONE_3D", "        NUM_FILTERS: [8, 8, 16, 32, 64, 64]\n", "VoxelResBackBone8xWidth"),
])
def test_width_key_on_an_openpcdet_class_name_is_refused(tmp_path, section, text, hint):
    """OpenPCDet's BaseBEVBackbone / VoxelResBackBone8x ignore these keys (a student would half-load there): the
    error names the key and the file that wrote it, and points at what to write instead."""
    bad = write(tmp_path / "half_width.yaml",
                f"_BASE_CONFIG_: configs/cp_voxel_0075.yaml\nMODEL:\n    {section}:\n{text}")
    with pytest.raises(ConfigError, match=hint) as err:
        cfg_from_yaml_file(bad)
    key = text.split(":")[0].strip()
    assert f"MODEL.{section}.{key}" in str(err.value) and "half_width.yaml" in str(err.value)
    ok = write(tmp_path / "width_class.yaml",
               f"_BASE_CONFIG_: configs/cp_voxel_0075.yaml\nMODEL:\n    {section}:\n        NAME: "
               f"{'BaseBEVBackboneWidth' if section == 'BACKBONE_2D' else 'VoxelResBackBone8xWidth'}\n{text}")
    assert key in cfg_from_yaml_file(ok).MODEL[section]


def test_base_resolved_relative_to_including_file_not_cwd(tmp_path, monkeypatch):
    write(tmp_path / "a/base.yaml", "X: {A: 1, B: [1, 2]}\nY: 3\n")
    child = write(tmp_path / "a/sub/child.yaml", "_BASE_CONFIG_: ../base.yaml\nX: {B: [5]}\n")
    monkeypatch.chdir(tmp_path)
    from rdd.config import load_config_with_origin

    cfg, origin = load_config_with_origin(child)
    assert cfg.X.A == 1 and cfg.X.B == [5] and cfg.Y == 3
    assert origin["X.B"] == child.resolve() and origin["Y"] == (tmp_path / "a/base.yaml").resolve()


def test_nested_base_loads_whole_file_at_that_level(tmp_path):
    write(tmp_path / "student.yaml", "CLASS_NAMES: [car]\nMODEL: {NAME: M}\n")
    kd = write(tmp_path / "kd.yaml", "Z: {STUDENT: {_BASE_CONFIG_: student.yaml}}\n")
    from rdd.config import load_config_with_origin

    cfg, _ = load_config_with_origin(kd)
    assert cfg.Z.STUDENT.MODEL.NAME == "M"
    assert cfg.Z.STUDENT._BASE_CONFIG_ == str((tmp_path / "student.yaml").resolve())


def test_repo_relative_base(tmp_path):
    cfg_file = write(tmp_path / "x.yaml", "_BASE_CONFIG_: configs/cp_voxel_s.yaml\n")
    cfg = cfg_from_yaml_file(cfg_file)
    assert cfg.MODEL.DENSE_HEAD.SHARED_CONV_CHANNEL == 32


def test_missing_base_names_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "_BASE_CONFIG_: nowhere/missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml") as err:
        cfg_from_yaml_file(bad)
    assert "bad.yaml" in str(err.value)


def test_base_cycle_detected(tmp_path):
    write(tmp_path / "a.yaml", "_BASE_CONFIG_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_CONFIG_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        cfg_from_yaml_file(tmp_path / "a.yaml")


def test_misspelt_model_key_names_key_and_file(tmp_path):
    bad = write(tmp_path / "typo.yaml",
                "_BASE_CONFIG_: configs/cp_voxel_0075.yaml\nMODEL:\n  BACKBONE_2D:\n    WIDHT: 0.5\n")
    with pytest.raises(ConfigError) as err:
        cfg_from_yaml_file(bad)
    assert "MODEL.BACKBONE_2D: unknown key(s) ['WIDHT']" in str(err.value) and "typo.yaml" in str(err.value)


def test_missing_required_key(tmp_path):
    src = (CONFIGS / "cp_voxel_0075.yaml").read_text().replace("        NUM_BEV_FEATURES: 256\n", "")
    bad = write(tmp_path / "nobev.yaml", src.replace("dataset/nuscenes_dataset.yaml",
                                                     str(CONFIGS / "dataset/nuscenes_dataset.yaml")))
    with pytest.raises(ConfigError, match="NUM_BEV_FEATURES"):
        cfg_from_yaml_file(bad)


def test_unknown_top_level_key(tmp_path):
    bad = write(tmp_path / "top.yaml", "_BASE_CONFIG_: configs/cp_voxel_s.yaml\nOPTIMISATION: {LR: 1}\n")
    with pytest.raises(ConfigError, match="OPTIMISATION"):
        cfg_from_yaml_file(bad)


def test_cfg_from_list_sets_and_coerces():
    cfg = cfg_from_yaml_file(CONFIGS / "cp_voxel_s.yaml")
    cfg_from_list(["OPTIMIZATION.NUM_EPOCHS", "2", "OPTIMIZATION.LR", "1",
                   "DATA_CONFIG.DATA_PATH", "/tmp/somewhere",
                   "DATA_CONFIG.POINT_CLOUD_RANGE", "[-10, -10, -5, 10, 10, 3]",
                   "MODEL.BACKBONE_2D.NUM_FILTERS", "32,64"], cfg)
    assert cfg.OPTIMIZATION.NUM_EPOCHS == 2
    assert cfg.OPTIMIZATION.LR == 1.0 and isinstance(cfg.OPTIMIZATION.LR, float)
    assert cfg.DATA_CONFIG.DATA_PATH == "/tmp/somewhere"
    assert cfg.DATA_CONFIG.POINT_CLOUD_RANGE == [-10, -10, -5, 10, 10, 3]
    assert cfg.MODEL.BACKBONE_2D.NUM_FILTERS == [32, 64]


@pytest.mark.parametrize("pair,match", [
    (["MODEL.BACKBONE_2D.NUM_FILTRES", "1"], "NUM_FILTRES"),
    (["NOPE.X", "1"], "NOPE"),
    (["OPTIMIZATION.NUM_EPOCHS", "'ten'"], "NUM_EPOCHS"),
    (["OPTIMIZATION.NUM_EPOCHS"], "odd"),
])
def test_cfg_from_list_errors_name_the_key(pair, match):
    cfg = cfg_from_yaml_file(CONFIGS / "cp_voxel_s.yaml")
    with pytest.raises(ConfigError, match=match):
        cfg_from_list(pair, cfg)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not_there.yaml"):
        cfg_from_yaml_file("configs/not_there.yaml")
