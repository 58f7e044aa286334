"""Cost of GID's general instance selection (GISM) per batch, for the candidate counts ``PRE_NMS_TOPK``.

    python bench/gism_cost.py [--json out.json] [--repeats 5] [--batch 4] [--threads 1]

Maps: the 0.1 m protocol's head maps (range +-54 m, stride 8: 135 x 135 cells), nuScenes' 6 head groups / 10
classes, random logits (background ~ -3) and codes (seeded), teacher and student on the same grid. Each variant
(``PRE_NMS_TOPK`` 1000, GISM's default here; 3000, GID's detectron2 setting) selects the general instances of the
same batch; the variants are warmed up once, then run round-robin ``--repeats`` times (a shared machine's load
changes hit all alike). Output: median and best seconds per batch per variant, their ratio, the instances kept.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench_json import emit  # noqa: E402  (this script's folder is on sys.path)
from rdd.distill.baselines.gism import GISMConfig, select_general_instances  # noqa: E402
from rdd.distill.context import HeadLayout  # noqa: E402
from rdd.geometry import BEVGrid  # noqa: E402

GROUPS = (('car',), ('truck', 'construction_vehicle'), ('bus', 'trailer'), ('barrier',), ('motorcycle', 'bicycle'),
          ('pedestrian', 'traffic_cone'))
CHANNELS = {'center': 2, 'center_z': 1, 'dim': 3, 'rot': 2, 'vel': 2}


def random_preds(batch, height, width, gen):
    out = []
    for group in GROUPS:
        pred = {k: torch.randn(batch, c, height, width, generator=gen) * 0.3 for k, c in CHANNELS.items()}
        pred['hm'] = torch.randn(batch, len(group), height, width, generator=gen) - 3.0
        out.append(pred)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', default=None)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = BEVGrid((-54.0, -54.0, -5.0, 54.0, 54.0, 3.0), (0.1, 0.1, 0.2), 8)
    height, width = grid.map_size
    names = tuple(n for g in GROUPS for n in g)
    layout = HeadLayout(names, GROUPS, tuple(CHANNELS), dict(CHANNELS), (1.0,) * 10, 0.1, 2)
    gen = torch.Generator().manual_seed(0)
    teacher, student = random_preds(args.batch, height, width, gen), random_preds(args.batch, height, width, gen)
    variants = {f'pre_nms_topk_{k}': GISMConfig(pre_nms_topk=k) for k in (1000, 3000)}
    times, kept = {name: [] for name in variants}, {}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up
        for name, cfg in variants.items():
            start = time.perf_counter()
            gis = select_general_instances(teacher, student, grid, grid, layout, cfg)
            if repeat:
                times[name].append(time.perf_counter() - start)
            kept[name] = len(gis)
    result = {name: {'median_s': statistics.median(t), 'best_s': min(t), 'instances': kept[name]}
              for name, t in times.items()}
    result['ratio_3000_over_1000'] = result['pre_nms_topk_3000']['median_s'] / result['pre_nms_topk_1000']['median_s']
    result['meta'] = {'batch': args.batch, 'map': [height, width], 'groups': len(GROUPS), 'threads': args.threads,
                      'repeats': args.repeats, 'torch': torch.__version__}
    return emit(result, args.json)


if __name__ == '__main__':
    main()
