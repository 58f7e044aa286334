"""Export the student of a distillation checkpoint as a plain detector checkpoint.

    python tools/export_student.py --cfg KD_CONFIG --ckpt IN.pth --out OUT.pth

IN.pth holds a Distiller state (``student.*`` and ``kd_losses.*`` keys, never the teacher). OUT.pth is
OpenPCDet's format ``{'model_state', 'epoch', 'it', 'version'}`` with the bare student keys; it is checked by
loading it strictly into a model built from the KD config's ``MODEL.STUDENT`` before it is written, so it loads
strictly into the student config with ``tools/test.py`` here and with OpenPCDet's own ``test.py``. The teacher
checkpoint is not needed.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export_student(cfg_file, ckpt_path, out_path):
    """Write the student checkpoint; returns the number of exported keys."""
    from rdd.config import cfg_from_yaml_file
    from rdd.distill import student_state_from_distiller
    from rdd.engine.checkpoint_io import save_checkpoint
    from rdd.models import build_network, model_geometry
    from rdd.models.checkpoint import load_state_dict_strict, read_checkpoint

    cfg = cfg_from_yaml_file(cfg_file)
    if cfg.MODEL.get('NAME') != 'Distiller':
        raise SystemExit(f'{cfg_file}: MODEL.NAME is {cfg.MODEL.get("NAME")!r}, expected a Distiller config')
    ckpt = read_checkpoint(ckpt_path)
    state = ckpt.get('model_state', ckpt)
    try:
        student_state = student_state_from_distiller(state)
    except KeyError as exc:
        raise SystemExit(f'{ckpt_path}: {exc.args[0]}')
    student = build_network(cfg.MODEL.STUDENT.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=model_geometry(cfg))
    load_state_dict_strict(student, student_state, strict=True)  # one error listing every mismatching key
    out = {'model_state': student_state, 'epoch': ckpt.get('epoch', None), 'it': ckpt.get('it', None),
           'version': ckpt.get('version', None) or 'rdd'}
    save_checkpoint(out, out_path)
    return len(student_state)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cfg_file', '--cfg', dest='cfg_file', required=True, help='the distillation config')
    parser.add_argument('--ckpt', required=True, help='Distiller checkpoint (e.g. output/.../checkpoint_epoch_20.pth)')
    parser.add_argument('--out', required=True, help='student checkpoint to write')
    args = parser.parse_args(argv)
    n = export_student(args.cfg_file, args.ckpt, args.out)
    print(f'wrote {args.out}: {n} student keys')


if __name__ == '__main__':
    main()
