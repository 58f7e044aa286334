"""A short distillation run on the synthetic nuScenes-format set lowers the RDD terms."""
import numpy as np
import torch

from rdd.datasets import build_dataloader
from rdd.engine.batch import load_data_to_device
from test_distill_helpers import build_distiller, kd_cfg, write_teacher_ckpt


def test_short_rdd_run_lowers_rdd_terms(synth_nusc, tmp_path):
    ckpt = tmp_path / 'teacher.pth'
    write_teacher_ckpt(ckpt)
    cfg = kd_cfg(ckpt, losses=[{'NAME': 'RDDLoss', 'PROPOSAL': {'SCORE_THRESH': 0.0}}])
    dcfg = cfg.DATA_CONFIG
    dcfg.VERSION = synth_nusc.version
    dcfg.MAX_SWEEPS = 1
    dcfg.INFO_PATH = {'train': [synth_nusc.train_info_path], 'test': [synth_nusc.val_info_path]}
    np.random.seed(0)
    _, loader, _ = build_dataloader(dcfg, cfg.CLASS_NAMES, batch_size=2, dist=False,
                                    root_path=synth_nusc.data_path, workers=0, training=False)
    batches = [load_data_to_device(b, 'cpu') for _, b in zip(range(2), loader)]
    assert all((b['gt_boxes'][..., -1] > 0).any() for b in batches)
    d = build_distiller(cfg)
    d.train()
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    hist = []
    for it in range(10):
        ret, tb, _ = d(batches[it % 2])
        opt.zero_grad()
        ret['loss'].backward()
        opt.step()
        assert torch.isfinite(ret['loss'])
        hist.append([tb['kd/RDDLoss/rdd_feat'], tb['kd/RDDLoss/rdd_logit'], tb['kd/RDDLoss']])
        assert tb['kd/RDDLoss/rdd_pairs'] > 0 and tb['kd/RDDLoss/rdd_kept_fraction'] > 0
    hist = np.array(hist)
    first, last = hist[:2].mean(0), hist[-4:].mean(0)
    assert last[0] < 0.85 * first[0], hist[:, 0]  # feature term
    assert last[1] < 0.85 * first[1], hist[:, 1]  # logit term (heatmaps)
    assert last[2] < first[2], hist[:, 2]        # whole RDD loss
