"""Evaluate checkpoints with the nuScenes devkit (OpenPCDet's flags).

    python tools/test.py --cfg configs/<x>.yaml --ckpt output/.../ckpt/checkpoint_epoch_N.pth [--infer_time]
    python tools/test.py --cfg configs/<x>.yaml --eval_all [--ckpt_dir DIR]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rdd.engine.test_pipeline import main  # noqa: E402

if __name__ == '__main__':
    main()
