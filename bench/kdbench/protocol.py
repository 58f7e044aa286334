"""The benchmark protocol as data: ``configs/bench/benchmark.yaml`` -> :class:`Protocol` -> a list of runs.

A run is one (row, student, seed) cell; the teacher is trained once. Every key of the YAML is checked here,
and an error names the file and the key.
"""
import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_FILE = REPO_ROOT / 'configs' / 'bench' / 'benchmark.yaml'
TOP_KEYS = {'DATA', 'TEACHER', 'STUDENTS', 'ROWS', 'DISPARITY', 'QUICK', 'ESTIMATE_S'}
DATA_KEYS = {'ROOT', 'VERSION', 'SCENES', 'SAMPLES_PER_SCENE', 'VAL_FRACTION', 'SEED', 'AZIMUTH_RES_DEG'}
ROW_KEYS = {'KEY', 'LABEL', 'PAPER', 'SEEDS', 'KD_LOSSES', 'LAMBDA'}


class ProtocolError(ValueError):
    """``benchmark.yaml`` (or a command-line selection) is invalid; the message names the file and key."""


@dataclass(frozen=True)
class DataSpec:
    """The synthetic set: ``root`` (absolute DATA_PATH; the devkit root is ``root / version``), its size
    (``scenes`` x ``samples_per_scene`` key frames, ``val_fraction`` of the scenes in val), generator ``seed``
    and LiDAR azimuth step ``azimuth_res_deg`` (degrees)."""
    root: Path
    version: str
    scenes: int
    samples_per_scene: int
    val_fraction: float
    seed: int
    azimuth_res_deg: float


@dataclass(frozen=True)
class Student:
    key: str
    config: Path       # trained alone
    kd_config: Path    # the Distiller config whose KD_LOSSES a row replaces
    label: str


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    paper: str
    seeds: int
    kd_losses: Optional[Tuple[dict, ...]]   # None: the student alone
    sweep_lambda: Optional[float] = None   # the row's point in the λ-sweep plot

    @property
    def loss_names(self) -> List[str]:
        return [entry['NAME'] for entry in self.kd_losses or ()]


@dataclass(frozen=True)
class Run:
    """One cell of the table."""
    row: Row
    student: Student
    seed: int

    @property
    def run_id(self) -> str:
        return f'{self.student.key}/{self.row.key}/seed{self.seed}'


@dataclass
class Protocol:
    source: Path
    data: DataSpec
    teacher: Path
    students: Dict[str, Student]
    rows: List[Row]
    disparity_rows: List[str]
    disparity_seed: int
    teacher_epochs: Optional[int] = None   # None: the config's NUM_EPOCHS (quick: 1)
    student_epochs: Optional[int] = None
    estimate_s: dict = field(default_factory=dict)
    quick: bool = False
    quick_rows: Optional[List[str]] = None   # QUICK.ROWS / QUICK.SEEDS: what --quick runs by default
    quick_seeds: Optional[int] = None

    def row(self, key):
        for r in self.rows:
            if r.key == key:
                return r
        raise ProtocolError(f'{self.source}: no row {key!r} (rows: {[r.key for r in self.rows]})')

    def runs(self) -> List[Run]:
        """Every (row, student, seed) cell, seed-major (seed 0 of every row first), so that a benchmark
        stopped early has every row with as many seeds as possible."""
        depth = max((r.seeds for r in self.rows), default=0)
        return [Run(row, student, seed) for seed in range(depth) for row in self.rows if seed < row.seeds
                for student in self.students.values()]


def _need(mapping, key, where, kind=None):
    if not isinstance(mapping, dict) or key not in mapping:
        raise ProtocolError(f'{where}: missing key {key}')
    value = mapping[key]
    if kind is not None and not isinstance(value, kind):
        raise ProtocolError(f'{where}.{key}: expected {kind.__name__}, got {value!r}')
    return value


def _no_unknown(mapping, allowed, where):
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ProtocolError(f'{where}: unknown key(s) {unknown} (allowed: {sorted(allowed)})')


def _config_path(name, where, base_dir):
    path = (base_dir / name).resolve()
    if not path.is_file():
        raise ProtocolError(f'{where}: config {name} not found (looked for {path})')
    return path


def _data_spec(raw, where):
    _no_unknown(raw, DATA_KEYS, where)
    root = Path(_need(raw, 'ROOT', where, str))
    return DataSpec(root=root if root.is_absolute() else REPO_ROOT / root, version=_need(raw, 'VERSION', where, str),
                    scenes=_need(raw, 'SCENES', where, int), samples_per_scene=_need(raw, 'SAMPLES_PER_SCENE', where, int),
                    val_fraction=float(_need(raw, 'VAL_FRACTION', where, (int, float))),
                    seed=_need(raw, 'SEED', where, int),
                    azimuth_res_deg=float(_need(raw, 'AZIMUTH_RES_DEG', where, (int, float))))


def _row(raw, index, where):
    where = f'{where}.ROWS[{index}]'
    _no_unknown(raw, ROW_KEYS, where)
    kd = _need(raw, 'KD_LOSSES', where)
    if kd is not None and (not isinstance(kd, list) or not kd
                           or not all(isinstance(e, dict) and isinstance(e.get('NAME'), str) for e in kd)):
        raise ProtocolError(f'{where}.KD_LOSSES: null or a non-empty list of entries with a NAME, got {kd!r}')
    seeds = _need(raw, 'SEEDS', where, int)
    if seeds < 1:
        raise ProtocolError(f'{where}.SEEDS: at least 1, got {seeds}')
    lam = raw.get('LAMBDA')
    return Row(key=_need(raw, 'KEY', where, str), label=_need(raw, 'LABEL', where, str),
               paper=str(raw.get('PAPER', '')), seeds=seeds,
               kd_losses=None if kd is None else tuple(copy.deepcopy(kd)),
               sweep_lambda=None if lam is None else float(lam))


def load_protocol(path=PROTOCOL_FILE, quick=False) -> Protocol:
    """Read and check ``path``; with ``quick`` the ``QUICK`` section replaces data, epochs, rows and seeds."""
    path = Path(path).resolve()
    with open(path) as f:
        raw = yaml.safe_load(f)
    where = str(path)
    if not isinstance(raw, dict):
        raise ProtocolError(f'{where}: top level must be a mapping')
    _no_unknown(raw, TOP_KEYS, where)
    base = path.parent
    students = {}
    for key, s in _need(raw, 'STUDENTS', where, dict).items():
        sw = f'{where}.STUDENTS.{key}'
        _no_unknown(s, {'CONFIG', 'KD_CONFIG', 'LABEL'}, sw)
        students[key] = Student(key=key, config=_config_path(_need(s, 'CONFIG', sw, str), sw + '.CONFIG', base),
                                kd_config=_config_path(_need(s, 'KD_CONFIG', sw, str), sw + '.KD_CONFIG', base),
                                label=str(s.get('LABEL', key)))
    rows = [_row(r, i, where) for i, r in enumerate(_need(raw, 'ROWS', where, list))]
    keys = [r.key for r in rows]
    if len(set(keys)) != len(keys):
        raise ProtocolError(f'{where}.ROWS: duplicate KEY in {keys}')
    disp = raw.get('DISPARITY') or {}
    proto = Protocol(source=path, data=_data_spec(_need(raw, 'DATA', where, dict), where + '.DATA'),
                     teacher=_config_path(_need(raw, 'TEACHER', where, str), where + '.TEACHER', base),
                     students=students, rows=rows, disparity_rows=list(disp.get('ROWS', [])),
                     disparity_seed=int(disp.get('SEED', 0)), estimate_s=dict(raw.get('ESTIMATE_S') or {}))
    for key in proto.disparity_rows:
        proto.row(key)
    return apply_quick(proto, raw.get('QUICK') or {}, where + '.QUICK') if quick else proto


def apply_quick(proto, quick, where):
    """The ``QUICK`` plan: its DATA keys over the full DATA, its EPOCHS; its ROWS and SEEDS become the default
    selection (``quick_rows``, ``quick_seeds``)."""
    _no_unknown(quick, {'DATA', 'EPOCHS', 'ROWS', 'SEEDS'}, where)
    raw_data = dict(quick.get('DATA') or {})
    _no_unknown(raw_data, DATA_KEYS, where + '.DATA')
    data = replace(proto.data, **{k.lower(): v for k, v in raw_data.items() if k != 'ROOT'})
    if 'ROOT' in raw_data:
        root = Path(raw_data['ROOT'])
        data = replace(data, root=root if root.is_absolute() else REPO_ROOT / root)
    epochs = quick.get('EPOCHS') or {}
    _no_unknown(epochs, {'TEACHER', 'STUDENT'}, where + '.EPOCHS')
    rows = list(quick.get('ROWS') or [r.key for r in proto.rows])
    for key in rows:
        proto.row(key)
    return replace(proto, data=data, quick=True, teacher_epochs=epochs.get('TEACHER'),
                   student_epochs=epochs.get('STUDENT'), quick_rows=rows, quick_seeds=quick.get('SEEDS'))


def select(proto, rows=None, students=None, seeds=None) -> Protocol:
    """``proto`` restricted to the row keys ``rows`` and student keys ``students`` (table order kept), every row
    with ``seeds`` seeds (None: as the table says)."""
    out = replace(proto)
    if rows is not None:
        for key in rows:
            proto.row(key)
        out.rows = [r for r in proto.rows if r.key in set(rows)]
    if students is not None:
        unknown = sorted(set(students) - set(proto.students))
        if unknown:
            raise ProtocolError(f'{proto.source}: no student(s) {unknown} (students: {sorted(proto.students)})')
        out.students = {k: v for k, v in proto.students.items() if k in set(students)}
    if seeds is not None:
        if seeds < 1:
            raise ProtocolError(f'--seeds: at least 1, got {seeds}')
        out.rows = [replace(r, seeds=seeds) for r in out.rows]
    return out
