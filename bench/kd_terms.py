"""What the KD terms weigh during training, per benchmark row: from the runs' TensorBoard logs.

    python bench/kd_terms.py [--out output/kd_benchmark/full] [--json PATH]

For every finished cell of a ``bench/kd_benchmark.py`` output folder (``runs/<student>/<row>/seed*/`` with a
``result.json``), reads the scalars the trainer logged at every iteration (``train/loss_det``, ``train/loss_kd``
and each loss's terms ``train/kd/<Loss>/<term>``, e.g. RDD's ``rdd_feat``, ``rdd_logit``, ``rdd_pairs``,
``rdd_kept_fraction``, ``rdd_disp_mean``) and reports, per (student, row), the mean over the iterations of each
run, averaged over the seeds, and for ``rdd_disp_mean`` also the smallest value any iteration saw (the λ that
would start dropping pairs). Prints a table and the JSON (``--json`` writes it). Issue #10 asks why RDD does or
does not help: proposal counts, kept fraction, the terms' size next to the detection loss.
"""
import argparse
import glob
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_json import write_json  # noqa: E402

PREFIX = 'train/'
MIN_KEYS = ('rdd_disp_mean',)  # per-iteration minimum reported besides the mean


def read_scalars(run_folder):
    """``{tag without 'train/': [values per iteration]}`` from the TensorBoard event files under ``run_folder``
    (the last value per step when a resumed run logged a step twice). Empty when there is no event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    by_tag = {}
    for path in sorted(glob.glob(os.path.join(run_folder, '**', 'events.out.tfevents.*'), recursive=True)):
        acc = EventAccumulator(path, size_guidance={'scalars': 0})
        acc.Reload()
        for tag in acc.Tags()['scalars']:
            if tag.startswith(PREFIX):
                steps = by_tag.setdefault(tag[len(PREFIX):], {})
                steps.update({e.step: e.value for e in acc.Scalars(tag)})
    return {tag: [steps[s] for s in sorted(steps)] for tag, steps in by_tag.items()}


def run_terms(scalars):
    """Per-run summary: the mean of every logged loss and KD term, ``<key>_min`` for ``MIN_KEYS``."""
    out = {}
    for tag, values in scalars.items():
        if not values or not (tag.startswith('loss_') or tag.startswith('kd/')):
            continue
        key = tag.split('/')[-1] if tag.startswith('kd/') and tag.count('/') == 2 else tag
        out[key] = sum(values) / len(values)
        if key in MIN_KEYS:
            out[key + '_min'] = min(values)
    if out.get('loss_det'):
        out['kd_over_det'] = out.get('loss_kd', 0.0) / out['loss_det']
    return out


def summarize(out_dir):
    """``[{'student', 'row', 'seeds', <term>: mean over seeds}]`` over the finished cells of ``out_dir``
    (``*_min`` keys: the minimum over seeds)."""
    groups = OrderedDict()
    for result_path in sorted(Path(out_dir).glob('runs/*/*/seed*/result.json')):
        result = json.loads(result_path.read_text())
        terms = run_terms(read_scalars(str(result_path.parent)))
        if terms:
            groups.setdefault((result['student'], result['row']), []).append(terms)
    rows = []
    for (student, row), runs in groups.items():
        keys = sorted(set().union(*runs))
        entry = {'student': student, 'row': row, 'seeds': len(runs)}
        for k in keys:
            values = [r[k] for r in runs if k in r]
            entry[k] = min(values) if k.endswith('_min') else sum(values) / len(values)
        rows.append(entry)
    return rows


COLUMNS = ('loss_det', 'loss_kd', 'kd_over_det', 'rdd_feat', 'rdd_logit', 'rdd_pairs', 'rdd_kept_fraction',
           'rdd_disp_mean', 'rdd_disp_mean_min', 'lad_moved')


def table(rows):
    """A Markdown table of ``rows`` (``-`` where a row has no such term)."""
    lines = ['| student | row | seeds | ' + ' | '.join(COLUMNS) + ' |', '|---' * (3 + len(COLUMNS)) + '|']
    for r in rows:
        cells = [f'{r[c]:.4g}' if c in r else '-' for c in COLUMNS]
        lines.append(f"| {r['student']} | {r['row']} | {r['seeds']} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=str(Path(__file__).resolve().parents[1] / 'output' / 'kd_benchmark' / 'full'),
                   help='the bench/kd_benchmark.py output folder')
    p.add_argument('--json', default=None, help='write the summary here (default: <out>/kd_terms.json)')
    args = p.parse_args(argv)
    if not Path(args.out, 'runs').is_dir():
        raise SystemExit(f'{args.out}: no runs/ folder; not a bench/kd_benchmark.py output folder')
    rows = summarize(args.out)
    print(table(rows))
    write_json({'out': str(args.out), 'rows': rows}, args.json or str(Path(args.out) / 'kd_terms.json'))
    return rows


if __name__ == '__main__':
    main()
