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


@pytest.mark.parametrize("name,width_2d,shared,bev", [
    ("cp_voxel_s", 0.5, 32, 256), ("cp_voxel_xs", 0.5, 32, 192), ("cp_voxel_xxs", 0.25, 16, 128)])
def test_student_configs_override_only_widths(name, width_2d, shared, bev):
    teacher = cfg_from_yaml_file(CONFIGS / "cp_voxel_0075.yaml")
    cfg = cfg_from_yaml_file(CONFIGS / f"{name}.yaml")
    assert cfg.MODEL.BACKBONE_2D.WIDTH == width_2d
    assert cfg.MODEL.DENSE_HEAD.SHARED_CONV_CHANNEL == shared
    assert cfg.MODEL.MAP_TO_BEV.NUM_BEV_FEATURES == bev
    # everything else inherited unchanged (lists replaced whole, dicts merged)
    assert cfg.MODEL.BACKBONE_2D.NUM_FILTERS == teacher.MODEL.BACKBONE_2D.NUM_FILTERS
    assert cfg.MODEL.DENSE_HEAD.LOSS_CONFIG == teacher.MODEL.DENSE_HEAD.LOSS_CONFIG
    assert cfg.DATA_CONFIG == teacher.DATA_CONFIG
    assert cfg.OPTIMIZATION == teacher.OPTIMIZATION


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
