"""setup.py resolves without backtracking: every dependency whose newer releases need numpy >= 2 is capped."""
import ast
from pathlib import Path

from packaging.requirements import Requirement

SETUP = Path(__file__).resolve().parent.parent / 'setup.py'


def _install_requires():
    tree = ast.parse(SETUP.read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'setup')
    reqs = next(k.value for k in call.keywords if k.arg == 'install_requires')
    return {r.name: r for r in map(Requirement, ast.literal_eval(reqs))}


def test_numpy_1_and_the_last_opencv_wheel_for_it():
    """opencv-python-headless (nuscenes-devkit's, unpinned there) needs numpy >= 2 from 4.12.0.88 on: without a
    cap pip downloaded 5.0.0.93, 4.14.0.94, 4.13.0.92, 4.13.0.90 and 4.12.0.88 (50-60 MB each) before 4.11.0.86."""
    reqs = _install_requires()
    assert not reqs['numpy'].specifier.contains('2.0.0') and reqs['numpy'].specifier.contains('1.26.4')
    opencv = reqs['opencv-python-headless'].specifier
    assert opencv.contains('4.11.0.86')
    assert not any(opencv.contains(v) for v in ('4.12.0.88', '4.13.0.90', '4.14.0.94', '5.0.0.93'))
    assert not opencv.contains('4.5.4.57')  # nuscenes-devkit 1.2.0 asks for >= 4.5.4.58
