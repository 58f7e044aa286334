"""The same benchmark cells in two runs of the KD benchmark: which reproduce exactly, how far the others moved.

    python bench/kd_compare.py OLD/results.json NEW/results.json [--json PATH]

Cells are matched by their cache key (the hash of the resolved run config, epochs, seed, data and teacher:
``bench/kdbench/runs.py``), so a pair is the same experiment run by two versions of the code. Prints, per
(student, row), how many pairs give the same mAP to every digit and the largest |ΔmAP| of the others, then the
median and maximum |ΔmAP| over all pairs that differ: what a change of the code that should not matter (e.g.
float rounding in the teacher) does to a trained number — to be read next to the seed spread.
"""
import argparse
import json
import statistics
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_json import emit  # noqa: E402


def load_runs(path):
    """``{cache key: run}`` of a ``results.json`` written by ``bench/kd_benchmark.py``."""
    try:
        runs = json.loads(Path(path).read_text())['runs']
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f'{path}: not a bench/kd_benchmark.py results.json ({exc})')
    return {r['key']: r for r in runs}


def compare(old, new):
    """``{'pairs', 'identical', 'changed', 'median_abs_dmap', 'max_abs_dmap', 'cells': [...]}`` over the keys
    in both ``old`` and ``new`` (``{key: run}``); per cell (student, row): pairs, identical, max |ΔmAP|."""
    cells = OrderedDict()
    moved = []
    for key in sorted(set(old) & set(new), key=lambda k: (new[k]['student'], new[k]['row'], new[k]['seed'])):
        d = abs(new[key]['mAP'] - old[key]['mAP'])
        student, row = new[key]['student'], new[key]['row']
        cell = cells.setdefault((student, row), {'student': student, 'row': row, 'pairs': 0, 'identical': 0,
                                                 'max_abs_dmap': 0.0})
        cell['pairs'] += 1
        cell['identical'] += d == 0.0
        cell['max_abs_dmap'] = max(cell['max_abs_dmap'], d)
        if d:
            moved.append(d)
    pairs = sum(c['pairs'] for c in cells.values())
    return {'pairs': pairs, 'identical': pairs - len(moved), 'changed': len(moved),
            'median_abs_dmap': statistics.median(moved) if moved else 0.0, 'max_abs_dmap': max(moved, default=0.0),
            'cells': list(cells.values())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('old', help='results.json of the earlier run')
    p.add_argument('new', help='results.json of the later run')
    p.add_argument('--json', default=None, help='also write the comparison here')
    args = p.parse_args(argv)
    result = compare(load_runs(args.old), load_runs(args.new))
    for c in result['cells']:
        print(f"{c['student']:>4} {c['row']:<16} {c['identical']}/{c['pairs']} identical, "
              f"max |dmAP| {c['max_abs_dmap']:.4f}", file=sys.stderr)
    return emit(result, args.json)


if __name__ == '__main__':
    main()
