"""rdd.engine.cli.load_config: a relative MODEL.TEACHER_CKPT resolves against the KD config file's directory."""
from pathlib import Path

import pytest

from rdd.engine.cli import load_config

CFG_DIR = Path(__file__).resolve().parent / 'configs'


def _kd_config(tmp_path, teacher_ckpt):
    sub = tmp_path / 'cfgs'
    (sub / 'ckpts').mkdir(parents=True)
    (sub / 'ckpts' / 't.pth').write_bytes(b'not read by load_config')
    cfg = sub / 'kd.yaml'
    cfg.write_text(f"_BASE_CONFIG_: {CFG_DIR / 'tiny_kd.yaml'}\nMODEL:\n    TEACHER_CKPT: {teacher_ckpt}\n")
    return cfg


def test_relative_teacher_ckpt_resolves_against_the_config_dir(tmp_path, monkeypatch):
    cfg_file = _kd_config(tmp_path, 'ckpts/t.pth')
    elsewhere = tmp_path / 'cwd'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the config's directory
    cfg = load_config(str(cfg_file))
    assert cfg.MODEL.TEACHER_CKPT == str(tmp_path / 'cfgs' / 'ckpts' / 't.pth')
    # --set of a relative path resolves the same way; --teacher_ckpt (a command-line path) wins, against the CWD
    cfg = load_config(str(cfg_file), ['MODEL.TEACHER_CKPT', '../cfgs/ckpts/t.pth'])
    assert cfg.MODEL.TEACHER_CKPT == str(tmp_path / 'cfgs' / 'ckpts' / 't.pth')
    (elsewhere / 'flag.pth').write_bytes(b'x')
    assert load_config(str(cfg_file), teacher_ckpt='flag.pth').MODEL.TEACHER_CKPT == str(elsewhere / 'flag.pth')


def test_absolute_and_plain_configs_are_unchanged(tmp_path):
    absolute = tmp_path / 'abs.pth'
    cfg = load_config(str(_kd_config(tmp_path, absolute)))
    assert cfg.MODEL.TEACHER_CKPT == str(absolute)
    plain = load_config(str(CFG_DIR / 'tiny_student.yaml'))
    assert 'TEACHER_CKPT' not in plain.MODEL
    with pytest.raises(ValueError, match='Distiller'):
        load_config(str(CFG_DIR / 'tiny_student.yaml'), teacher_ckpt=str(absolute))


@pytest.mark.parametrize('argv, seed', [([], None), (['--fix_random_seed'], 666), (['--seed', '3'], 3),
                                        (['--fix_random_seed', '--seed', '0'], 0)])
def test_train_seed_flag(argv, seed):
    """--seed N seeds the run with N (multi-seed experiments); --fix_random_seed alone keeps OpenPCDet's 666."""
    from rdd.engine.cli import train_parser
    from rdd.engine.train_pipeline import run_seed
    assert run_seed(train_parser().parse_args(['--cfg', 'x.yaml'] + argv)) == seed
