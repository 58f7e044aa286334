"""The KD benchmark ("mini Table 3", DESIGN.md §6) behind ``bench/kd_benchmark.py``.

Modules: :mod:`.protocol` (the row table and plan, read from ``configs/bench/benchmark.yaml``), :mod:`.data`
(the synthetic set and its fingerprint), :mod:`.runs` (run configs, cache keys, availability),
:mod:`.execute` (resumable, parallel execution of ``run_one`` subprocesses), :mod:`.run_one` (one
train + devkit evaluation), :mod:`.report` (mean ± std, Markdown, plots) and :mod:`.disparity` (the paper's
Fig. 2 measurement, used by ``tools/disparity.py``).
"""
