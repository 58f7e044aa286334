"""Per-region teacher–student feature disparity, the RDD paper's Fig. 2, as a histogram PNG and a JSON file.

    python tools/disparity.py --teacher_cfg configs/bench/cp_voxel.yaml --teacher_ckpt T.pth \
        --student alone configs/bench/cp_voxel_s.yaml S.pth \
        --student rdd configs/bench/kd_cp_voxel_s.yaml RDD.pth --out output/disparity/s

For every teacher proposal on the val split (today: the teacher's decoded boxes scored >= --score_thresh), both
neck maps (``spatial_features_2d``) are sampled at the same 7 x 7 metric points of the proposal's rotated BEV
box, and the region's disparity is the mean square distance between the teacher's features and the student's
brought to the teacher's width. How the student is brought there (--adapter):

* ``lstsq`` (default): an affine 1x1 map fitted by ridge least squares on the teacher proposals of
  --fit_samples TRAIN-split samples, i.e. on regions disjoint from the measured val regions. Students trained
  without an adapter (alone, PP logit KD) and with one are treated alike, so their histograms compare.
* ``checkpoint``: a Distiller checkpoint's KD-loss ``adapter`` (e.g. RDD's ψ), in eval mode; students
  without one fall back to ``lstsq``.

Distances are reported raw and divided by the teacher features' mean square (unitless; the histogram's x axis).
Students must use the teacher's voxels (same range and voxel size): both are fed the same batch.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.kdbench.disparity_tool import main  # noqa: E402
from rdd.datasets.cli import run_cli  # noqa: E402

if __name__ == '__main__':
    run_cli(main)
