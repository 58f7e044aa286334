"""Export the student of a distillation checkpoint: a plain detector checkpoint and its flattened config.

    python tools/export_student.py --cfg KD_CONFIG --ckpt IN.pth --out OUT.pth

IN.pth holds a Distiller state (``student.*`` and ``kd_losses.*`` keys, never the teacher). OUT.pth is
OpenPCDet's format ``{'model_state', 'epoch', 'it', 'version'}`` with the bare student keys; OUT.yaml beside it is
the student's config with every ``_BASE_CONFIG_`` resolved and written out, so OpenPCDet's ``test.py`` reads it
from any working directory. The pair is checked (the config read back, the student built from it, the
checkpoint loaded strictly) before anything is written; see ``rdd/engine/export.py``. The teacher checkpoint is not
needed.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rdd.datasets.cli import run_cli  # noqa: E402


def main(argv=None):
    from rdd.engine.export import export_student
    from rdd.models.checkpoint import CheckpointError
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cfg_file', '--cfg', dest='cfg_file', required=True, help='the distillation config')
    parser.add_argument('--ckpt', required=True, help='Distiller checkpoint (e.g. output/.../checkpoint_epoch_20.pth)')
    parser.add_argument('--out', required=True, help='student checkpoint to write (.pth; the config goes beside it)')
    args = parser.parse_args(argv)
    try:
        res = export_student(args.cfg_file, args.ckpt, args.out)
    except CheckpointError as exc:
        raise SystemExit(f'error: {exc}')
    print(f'wrote {res.checkpoint}: {res.num_keys} student keys')
    print(f'wrote {res.config}: the flattened student config')
    script = 'test_rdd.py' if res.needs_plugin else 'test.py'
    print(f'OpenPCDet: cd OpenPCDet/tools && python {script} --cfg_file {res.config} --ckpt {res.checkpoint}')
    if res.needs_plugin:
        print('           (test_rdd.py runs OpenPCDet\'s test.py after `import rdd.plugin`; docs/openpcdet.md)')
    print(f'rdd:       python tools/test.py --cfg {res.config} --ckpt {res.checkpoint}')
    return 0


if __name__ == '__main__':
    run_cli(main)
