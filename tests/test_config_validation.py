"""Config validation at load (rdd.config_schema): misspelt keys, wrong types and inconsistent geometry in
DATA_CONFIG, OPTIMIZATION and MODEL are a ConfigError naming the key and the file that set it; --set overrides
are validated the same way; one resolver for config-relative paths."""
from pathlib import Path

import pytest

from rdd.config import ROOT_DIR, cfg_from_yaml_file, resolve_path
from rdd.config_schema import ByName, key_field, parse_section
from rdd.engine.cli import load_config
from rdd.errors import ConfigError

STUDENT = ROOT_DIR / 'configs' / 'cp_voxel_s_0075.yaml'  # the 0.075 m grid the geometry cases below assume
TEACHER = ROOT_DIR / 'configs' / 'cp_voxel_0075.yaml'


def child(tmp_path, body, base=STUDENT, name='child.yaml'):
    path = tmp_path / name
    path.write_text(f'_BASE_CONFIG_: {base}\n{body}')
    return path


def load_error(path):
    with pytest.raises(ConfigError) as err:
        cfg_from_yaml_file(path)
    return str(err.value)


@pytest.mark.parametrize('body,key', [
    ('DATA_CONFIG:\n    MAX_SWEEP: 3\n', "DATA_CONFIG: unknown key(s) ['MAX_SWEEP']"),
    ('OPTIMIZATION:\n    GRAD_NORM_CLIPP: 5\n', "OPTIMIZATION: unknown key(s) ['GRAD_NORM_CLIPP']"),
    ('OPTIMIZATION:\n    LEARNING_RATE: 0.001\n', "OPTIMIZATION: unknown key(s) ['LEARNING_RATE']"),
    ('DATA_CONFIG:\n    DATA_PROCESSOR:\n        - {NAME: transform_points_to_voxels, VOXEL_SIZE: [0.1, 0.1, 0.2], '
     'MAX_POINTS_PER_VOXEL: 10, MAX_NUMBER_OF_VOXELS: {train: 10, test: 10}, MAX_VOXELS: 3}\n',
     "DATA_CONFIG.DATA_PROCESSOR[0]: unknown key(s) ['MAX_VOXELS']"),
    ('DATA_CONFIG:\n    DATA_AUGMENTOR:\n        AUG_CONFIG_LIST:\n            - {NAME: random_world_flip, '
     'ALONG_AXIS: [x]}\n', "DATA_CONFIG.DATA_AUGMENTOR.AUG_CONFIG_LIST[0]: unknown key(s) ['ALONG_AXIS']"),
])
def test_misspelt_keys_name_the_key_and_the_file(tmp_path, body, key):
    msg = load_error(child(tmp_path, body))
    assert key in msg and str(tmp_path / 'child.yaml') in msg


@pytest.mark.parametrize('body,key,words', [
    ('DATA_CONFIG:\n    MAX_SWEEPS: 0\n', 'DATA_CONFIG.MAX_SWEEPS', '>= 1'),
    ('DATA_CONFIG:\n    POINT_CLOUD_RANGE: [51.2, -51.2, -5.0, -51.2, 51.2, 3.0]\n', 'DATA_CONFIG.POINT_CLOUD_RANGE',
     'max > min'),
    ('DATA_CONFIG:\n    POINT_CLOUD_RANGE: [-51.2, -51.2, -5.0, 51.2, 51.2]\n', 'DATA_CONFIG.POINT_CLOUD_RANGE',
     '6 values'),
    ("OPTIMIZATION:\n    LR: '1e-3x'\n", 'OPTIMIZATION.LR', 'expected a number'),
    ('OPTIMIZATION:\n    LR: 1e-3\n', 'OPTIMIZATION.LR', 'write 1.0e-3'),  # YAML 1.1: a string
    ('OPTIMIZATION:\n    OPTIMIZER: adamw\n', 'OPTIMIZATION.OPTIMIZER', 'adam_onecycle'),
    ('OPTIMIZATION:\n    NUM_EPOCHS: 2.5\n', 'OPTIMIZATION.NUM_EPOCHS', 'integer'),
    ("MODEL:\n    DENSE_HEAD:\n        SHARED_CONV_CHANNEL: '32'\n", 'MODEL.DENSE_HEAD.SHARED_CONV_CHANNEL', 'integer'),
    ('MODEL:\n    DENSE_HEAD:\n        SEPARATE_HEAD_CFG:\n            HEAD_DICT: {center: {out_chanels: 2}}\n',
     "MODEL.DENSE_HEAD.SEPARATE_HEAD_CFG.HEAD_DICT.center: unknown key(s) ['out_chanels']", 'allowed'),
    ('MODEL:\n    BACKBONE_2D:\n        NUM_FILTERS: [64]\n', 'MODEL.BACKBONE_2D', 'same length'),
])
def test_types_and_ranges_are_checked_at_load(tmp_path, body, key, words):
    msg = load_error(child(tmp_path, body))
    assert key in msg and words in msg and 'child.yaml' in msg


def test_grid_must_fit_the_backbone_strides(tmp_path):
    # 0.075 m voxels on +-54.1 m: 1443 voxels, not a multiple of 8 x 2 (3D backbone, BEV backbone)
    msg = load_error(child(tmp_path, 'DATA_CONFIG:\n    POINT_CLOUD_RANGE: [-54.1, -54.1, -5.0, 54.1, 54.1, 3.0]\n'))
    assert 'DATA_CONFIG.DATA_PROCESSOR[2].VOXEL_SIZE' in msg and '1443 x 1443' in msg and 'multiples of 16' in msg
    assert str(TEACHER) in msg and f'POINT_CLOUD_RANGE set in {tmp_path / "child.yaml"}' in msg
    msg = load_error(child(tmp_path, 'MODEL:\n    DENSE_HEAD:\n        TARGET_ASSIGNER_CONFIG:\n'
                                     '            FEATURE_MAP_STRIDE: 4\n'))
    assert 'MODEL.DENSE_HEAD.TARGET_ASSIGNER_CONFIG.FEATURE_MAP_STRIDE' in msg and 'stride 8' in msg
    # 0.075 m voxels on +-54 m (1440 voxels) fit
    assert cfg_from_yaml_file(child(tmp_path, 'DATA_CONFIG:\n    POINT_CLOUD_RANGE: [-54.0, -54.0, -5.0, 54.0, 54.0, '
                                              '3.0]\n')).DATA_CONFIG.POINT_CLOUD_RANGE[0] == -54.0


def test_kd_sub_configs_are_validated_and_name_their_file(tmp_path):
    student = child(tmp_path, 'DATA_CONFIG:\n    MAX_SWEEPS: -1\n', name='student.yaml')
    kd = tmp_path / 'kd.yaml'
    kd.write_text(f'_BASE_CONFIG_: {ROOT_DIR / "configs" / "rdd_cp_voxel_s.yaml"}\n'
                  f'MODEL:\n    STUDENT: {{_BASE_CONFIG_: {student}}}\n')
    msg = load_error(kd)
    assert 'MODEL.STUDENT.DATA_CONFIG.MAX_SWEEPS' in msg and str(student) in msg
    kd.write_text(f'_BASE_CONFIG_: {ROOT_DIR / "configs" / "rdd_cp_voxel_s.yaml"}\nMODEL:\n    TEACHER_BM: eval\n')
    assert "MODEL: unknown key(s) ['TEACHER_BM']" in load_error(kd)
    kd.write_text(f'_BASE_CONFIG_: {ROOT_DIR / "configs" / "rdd_cp_voxel_s.yaml"}\nMODEL:\n    ADAPTERS: []\n')
    assert 'adapters belong to the KD loss' in load_error(kd)


def test_set_overrides_are_validated_and_split_file_is_settable(tmp_path):
    with pytest.raises(ConfigError, match=r'--set: DATA_CONFIG.MAX_SWEEPS: must be >= 1'):
        load_config(str(STUDENT), ['DATA_CONFIG.MAX_SWEEPS', '0'])
    with pytest.raises(ConfigError, match='VOXEL_SIZE'):
        load_config(str(STUDENT), ['DATA_CONFIG.POINT_CLOUD_RANGE', '[-54.1,-54.1,-5.0,54.1,54.1,3.0]'])
    split = tmp_path / 'splits.json'
    cfg = load_config(str(STUDENT), ['DATA_CONFIG.SPLIT_FILE', str(split)])
    assert cfg.DATA_CONFIG.SPLIT_FILE == str(split)
    assert cfg_from_yaml_file(STUDENT).DATA_CONFIG.SPLIT_FILE is None


def test_every_shipped_config_validates():
    """Every whole config (a top-level MODEL) validates; fragments (DATA_CONFIG / OPTIMIZATION bases, the KD
    benchmark's protocol file) are included by the whole ones."""
    import yaml
    files = sorted(p for p in (ROOT_DIR / 'configs').rglob('*.yaml')
                   if 'dataset' not in p.parts and 'MODEL' in (yaml.safe_load(p.read_text()) or {}))
    assert len(files) >= 10 and ROOT_DIR / 'configs' / 'bench' / 'kd_cp_voxel_xxs.yaml' in files
    for path in files:
        cfg_from_yaml_file(path)


# ---------------------------------------------------------------------------------------------- the mechanism
def test_parse_section_keys_types_names_and_refusals():
    from dataclasses import dataclass
    from typing import Annotated, Dict, Mapping, Optional, Tuple, Union

    @dataclass(frozen=True)
    class Step:
        rate: float = 1.0

    @dataclass(frozen=True)
    class Section:
        REFUSED = {'OLD': 'write RATE instead', 'WIDTH': lambda section: f"write SIZES {section['SIZES']}"}
        sizes: Tuple[int, int]
        lower: str = key_field('lower_key', 'x')
        either: Union[Tuple[float, float], float] = 0.0
        table: Optional[Dict[str, Step]] = None
        steps: Tuple[Annotated[Mapping, ByName({'step': Step})], ...] = ()

    got = parse_section(Section, {'SIZES': [1, 2], 'lower_key': 'y', 'EITHER': 3, 'TABLE': {'a': {'RATE': 2}},
                                  'STEPS': [{'NAME': 'step', 'RATE': 4}]}, 'S')
    assert got == Section(sizes=(1, 2), lower='y', either=3.0, table={'a': Step(2.0)}, steps=(Step(4.0),))
    assert parse_section(Section, {'SIZES': [1, 2], 'EITHER': [1, 2]}, 'S').either == (1.0, 2.0)
    for mapping, key in (({'SIZES': [1]}, 'S.SIZES'), ({'SIZES': [1, 2], 'LOWER_KEY': 'y'}, 'S.LOWER_KEY'),
                         ({'SIZES': [1, True]}, 'S.SIZES[1]'), ({}, 'S.SIZES'),
                         ({'SIZES': [1, 2], 'STEPS': [{'NAME': 'jump'}]}, 'S.STEPS[0].NAME'),
                         ({'SIZES': [1, 2], 'TABLE': {'a': {'RAT': 1}}}, 'S.TABLE.a.RAT'),
                         ({'SIZES': [1, 2], 'OLD': 1}, 'S.OLD')):
        with pytest.raises(ConfigError) as err:
            parse_section(Section, mapping, 'S')
        assert err.value.key == key and key.split('.')[-1] in str(err.value), (mapping, str(err.value))
    with pytest.raises(ConfigError, match=r'S.WIDTH: refused: write SIZES \[1, 2\]'):
        parse_section(Section, {'SIZES': [1, 2], 'WIDTH': 0.5}, 'S')


def test_resolve_path_is_the_one_resolver(tmp_path, monkeypatch):
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'f.yaml').write_text('')
    monkeypatch.chdir(tmp_path)
    assert resolve_path('f.yaml', [tmp_path / 'a', tmp_path / 'b']) == tmp_path / 'b' / 'f.yaml'
    assert resolve_path(str(tmp_path / 'x' / '..' / 'b' / 'f.yaml'), []) == tmp_path / 'b' / 'f.yaml'
    assert resolve_path('g.yaml', [tmp_path / 'a', tmp_path / 'b']) == tmp_path / 'a' / 'g.yaml'  # where expected
    assert resolve_path('b/f.yaml', []) == tmp_path / 'b' / 'f.yaml'  # no search dirs: the CWD
    with pytest.raises(ConfigError, match=r"base 'g.yaml' not found; tried: .*a/g.yaml, .*b/g.yaml"):
        resolve_path('g.yaml', [tmp_path / 'a', tmp_path / 'b'], required="base 'g.yaml'")
    assert Path(resolve_path('~', [])) == Path.home()
