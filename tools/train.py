"""Train a detector or a distillation run (OpenPCDet's flags).

    python tools/train.py --cfg configs/<x>.yaml [--batch_size N] [--epochs E] ... [--set KEY VALUE ...]
    torchrun --nproc_per_node=N tools/train.py --launcher pytorch --cfg configs/<x>.yaml ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rdd.engine.train_pipeline import main  # noqa: E402

if __name__ == '__main__':
    main()
