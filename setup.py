"""Install the ``rdd`` package.

``torch`` is asked for as a range so that users with their own CUDA build keep it; on a machine without
torch, ``make install`` first installs ``torch==2.13.0`` (a CPU wheel here) so pip does not pull a CUDA build.
GPU users swap the CPU ``spconv`` wheel for their CUDA's (``pip install spconv-cu118``), see README.md.

``opencv-python-headless`` (needed by nuscenes-devkit, unpinned there) is capped below 4.12: its 4.12+ wheels need
numpy >= 2, so without the cap pip downloads every newer 50-60 MB wheel before settling on 4.11.0.86, the last
one that works with numpy < 2.
"""
from setuptools import find_packages, setup

setup(
    name="rdd",
    version="0.1.0",
    description="Representation Disparity-aware Distillation (RDD) for LiDAR 3D detectors, OpenPCDet-compatible",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["rdd", "rdd.*"]),
    package_data={"rdd": ["py.typed"]},
    install_requires=[
        "torch>=2.0,<2.15",
        "spconv>=2.3.6,<2.4",
        "numpy>=1.22,<2",
        "pyyaml",
        "easydict",
        "tensorboard",
        "tqdm",
        "nuscenes-devkit==1.2.0",
        "opencv-python-headless>=4.5.4.58,<4.12",  # >= nuscenes-devkit's floor; 4.12+ needs numpy >= 2
        "shapely>=2.0",
        "pyquaternion",
    ],
    extras_require={
        "test": ["pytest>=7"],
    },
)
