"""Benchmark report: mean ± sample std per (student, row), the Markdown table and the plots.

``std`` is the sample standard deviation (n - 1 in the denominator; none for a single seed). A row's
difference to the student alone is flagged when it exceeds twice their pooled std
(``sqrt(((n1 - 1) s1² + (n2 - 1) s2²) / (n1 + n2 - 2))``), the reading issue #10 asks for.
"""
import math
from collections import OrderedDict

METRICS = ('mAP', 'NDS')


def mean_std(values):
    """``(mean, sample std)`` of ``values``; std is None for fewer than two values, mean None for none."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pooled_std(std1, n1, std2, n2):
    """Pooled sample std of two groups, None when either has fewer than two values."""
    if std1 is None or std2 is None or n1 + n2 <= 2:
        return None
    return math.sqrt(((n1 - 1) * std1 ** 2 + (n2 - 1) * std2 ** 2) / (n1 + n2 - 2))


def summarize(results):
    """``{(student, row): {'n', 'seeds', 'mAP': (mean, std), 'NDS': (mean, std), 'wall_s', 'cpu_s' (means)}}``
    over the finished runs ``results`` (dicts with ``student``, ``row``, ``seed``, ``mAP``, ``NDS``, ``wall_s``,
    ``cpu_s``)."""
    groups = OrderedDict()
    for r in results:
        groups.setdefault((r['student'], r['row']), []).append(r)
    out = OrderedDict()
    for key, runs in groups.items():
        runs = sorted(runs, key=lambda r: r['seed'])
        out[key] = {'n': len(runs), 'seeds': [r['seed'] for r in runs],
                    'wall_s': mean_std([r.get('wall_s', 0.0) for r in runs])[0],
                    'cpu_s': mean_std([r.get('cpu_s', 0.0) for r in runs])[0],
                    **{m: mean_std([r[m] for r in runs]) for m in METRICS}}
    return out


def _fmt(mean, std, digits=4):
    if mean is None:
        return 'n/a'
    return f'{mean:.{digits}f}' + (f' ± {std:.{digits}f}' if std is not None else '')


def delta_cell(cell, base, metric='mAP'):
    """``'+0.0123'`` (``'*'`` appended when |Δ| > 2 × the pooled std) for ``cell`` vs ``base``; '' for base."""
    if cell is base or cell is None or base is None:
        return ''
    (m1, s1), (m0, s0) = cell[metric], base[metric]
    delta = m1 - m0
    pooled = pooled_std(s1, cell['n'], s0, base['n'])
    flag = '*' if pooled is not None and abs(delta) > 2 * pooled else ''
    return f'{delta:+.4f}{flag}'


def student_table(proto, student, summary, teacher):
    """The Markdown table of one student: a row per protocol row (finished or not)."""
    base = summary.get((student.key, 'student'))
    lines = [f'### {student.label}', '',
             '| row | paper | seeds | mAP | NDS | ΔmAP vs alone | ΔNDS vs alone | min / run (wall, CPU) |',
             '|---|---|---|---|---|---|---|---|']
    if teacher:
        lines.append(f"| teacher | | 1 | {teacher['mAP']:.4f} | {teacher['NDS']:.4f} | | | "
                     f"{teacher.get('wall_s', 0) / 60:.1f}, {teacher.get('cpu_s', 0) / 60:.1f} |")
    for row in proto.rows:
        cell = summary.get((student.key, row.key))
        if cell is None:
            lines.append(f'| {row.label} | {row.paper} | 0 / {row.seeds} | not run | | | | |')
            continue
        seeds = f"{cell['n']}" if cell['n'] >= row.seeds else f"{cell['n']} / {row.seeds}"
        lines.append(f"| {row.label} | {row.paper} | {seeds} | {_fmt(*cell['mAP'])} | {_fmt(*cell['NDS'])} | "
                     f"{delta_cell(cell, base, 'mAP')} | {delta_cell(cell, base, 'NDS')} | "
                     f"{cell['wall_s'] / 60:.1f}, {cell['cpu_s'] / 60:.1f} |")
    return '\n'.join(lines)


def markdown(proto, summary, teacher, unavailable, failed, meta, notes=()):
    """``results.md``: header (command, date, data, teacher), one table per student, the unavailable rows, the
    failed runs and notes."""
    lines = ['# KD benchmark results', '',
             f"Command: `{meta.get('command', '')}`  ", f"Date: {meta.get('date', '')}, git {meta.get('git', '')}  ",
             f"Data: {meta.get('data', '')}  ",
             f"Wall time of this invocation: {meta.get('wall_s', 0) / 60:.1f} min; jobs: {meta.get('jobs', '')}", '']
    if teacher:
        lines.append(f"Teacher ({teacher.get('config', '')}, {teacher.get('epochs')} epochs, "
                     f"{teacher.get('wall_s', 0) / 60:.1f} min wall, {teacher.get('cpu_s', 0) / 60:.1f} min CPU): "
                     f"mAP {teacher['mAP']:.4f}, NDS {teacher['NDS']:.4f}")
    lines += ['', 'mean ± sample std over seeds; Δ vs the student alone, `*` where |Δ| > 2 × the pooled seed std.', '']
    for student in proto.students.values():
        lines += [student_table(proto, student, summary, teacher), '']
    if unavailable:
        grouped = {}
        for (student, key), why in sorted(unavailable.items()):
            grouped.setdefault((key, why), []).append(student)
        lines += ['## Unavailable rows', '']
        lines += [f'- {key} ({", ".join(students)}): {why}' for (key, why), students in grouped.items()]
        lines.append('')
    if failed:
        lines += ['## Failed runs', '']
        lines += [f'- {name}: {why.splitlines()[0]}' for name, why in sorted(failed.items())]
        lines.append('')
    if notes:
        lines += ['## Notes', ''] + [f'- {n}' for n in notes] + ['']
    return '\n'.join(lines)


def plot_bars(proto, summary, teacher, path):
    """mAP and NDS bars per row (one colour per student) with sample-std error bars; the teacher as a line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = [r for r in proto.rows if any((s, r.key) in summary for s in proto.students)]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(max(8, 1.0 * len(rows) + 4), 4.5), squeeze=False)
    width = 0.8 / max(1, len(proto.students))
    for ax, metric in zip(axes[0], METRICS):
        for i, student in enumerate(proto.students.values()):
            xs, means, errs = [], [], []
            for j, row in enumerate(rows):
                cell = summary.get((student.key, row.key))
                if cell is not None:
                    xs.append(j + (i - (len(proto.students) - 1) / 2) * width)
                    means.append(cell[metric][0])
                    errs.append(cell[metric][1] or 0.0)
            ax.bar(xs, means, width, yerr=errs, capsize=3, label=student.label)
        if teacher:
            ax.axhline(teacher[metric], color='k', linestyle='--', linewidth=1, label='teacher')
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r.label for r in rows], rotation=60, ha='right', fontsize=8)
        ax.set_ylabel(metric)
        ax.grid(axis='y', alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_lambda_sweep(proto, summary, path):
    """mAP over λ for the rows with a ``LAMBDA`` (the paper's Fig. 5a), one line per student; None when fewer
    than two of those rows have results."""
    sweep = sorted((r for r in proto.rows if r.sweep_lambda is not None), key=lambda r: r.sweep_lambda)
    if sum(any((s, r.key) in summary for s in proto.students) for r in sweep) < 2:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4))
    for student in proto.students.values():
        pts = [(r.sweep_lambda, summary[(student.key, r.key)]['mAP']) for r in sweep
               if (student.key, r.key) in summary]
        ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] or 0.0 for p in pts], marker='o',
                    capsize=3, label=student.label)
    ax.set_xlabel('λ (RDD pair selection)')
    ax.set_ylabel('mAP')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
