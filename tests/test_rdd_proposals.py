"""RDD steps 1-2: heatmap-peak proposals (3x3 maxima per head group, score threshold, top-K, decoded boxes, no
NMS) and their metric regions (CenterPoint Gaussian square or rotated box). Expected values worked out by hand."""
import math

import pytest
import torch

from kd_context_helpers import grid, head_layout
from rdd.distill.rdd import gaussian_radius_cells, heatmap_proposals, region_boxes

NAMES = ('car', 'truck', 'construction_vehicle')
GROUPS = (('car',), ('truck', 'construction_vehicle'))
LOW = -5.0  # sigmoid 0.0067: below every threshold used here


def maps(bsz=2, size=8):
    """Raw head maps of two groups on a ``size`` x ``size`` map; every heatmap LOW, regression maps 0."""
    def group(n_cls):
        return {'hm': torch.full((bsz, n_cls, size, size), LOW), 'center': torch.zeros(bsz, 2, size, size),
                'center_z': torch.zeros(bsz, 1, size, size), 'dim': torch.zeros(bsz, 3, size, size),
                'rot': torch.zeros(bsz, 2, size, size), 'vel': torch.zeros(bsz, 2, size, size)}
    return [group(1), group(2)]


def golden_maps():
    """Sample 0: car peak 0.75 at (row 1, col 2) with a 0.5 neighbour at (1, 3) (not a maximum) and a car peak 0.2
    at (6, 6); in group 1 the cell (5, 1) scores truck 0.25 and construction_vehicle 0.5 (one proposal, the best
    class of the group). Sample 1: nothing. The car at (1, 2) has centre offsets (0.25, 0.75), z -1, size 4 x 2 x 1.5
    m (log sizes), rot (cos, sin) = (0, 1): on the 1 m grid over +-4 m it decodes to x = 2.25 - 4 = -1.75,
    y = 1.75 - 4 = -2.25, yaw = pi/2."""
    pd = maps()
    pd[0]['hm'][0, 0, 1, 2] = math.log(3.0)          # 0.75
    pd[0]['hm'][0, 0, 1, 3] = 0.0                    # 0.5, next to 0.75
    pd[0]['hm'][0, 0, 6, 6] = -math.log(4.0)         # 0.2
    pd[1]['hm'][0, 0, 5, 1] = -math.log(3.0)         # truck 0.25
    pd[1]['hm'][0, 1, 5, 1] = 0.0                    # construction_vehicle 0.5
    pd[0]['center'][0, :, 1, 2] = torch.tensor([0.25, 0.75])
    pd[0]['center_z'][0, 0, 1, 2] = -1.0
    pd[0]['dim'][0, :, 1, 2] = torch.tensor([4.0, 2.0, 1.5]).log()
    pd[0]['rot'][0, :, 1, 2] = torch.tensor([0.0, 1.0])
    return pd


def layout(min_radius=2):
    return head_layout(NAMES, GROUPS, gaussian_overlap=0.1, min_radius=min_radius)


def test_peaks_thresholds_labels_and_decoded_box():
    props = heatmap_proposals(golden_maps(), layout(), grid(1.0, half=4.0), score_thresh=0.1, max_per_source=100)
    assert props.batch_idx.tolist() == [0, 0, 0]  # sample 1 has none
    assert props.score.tolist() == pytest.approx([0.75, 0.5, 0.2], abs=1e-6)  # ranked by score
    assert props.cell.tolist() == [[1, 2], [5, 1], [6, 6]]
    assert props.label.tolist() == [1, 3, 1]  # 1-based into NAMES: car, construction_vehicle, car
    assert props.group.tolist() == [0, 1, 0]
    assert props.source.tolist() == [0, 0, 0]
    assert props.box[0].tolist() == pytest.approx([-1.75, -2.25, -1.0, 4.0, 2.0, 1.5, math.pi / 2], abs=1e-5)
    # the 0.2 car: zero offsets, log size 0 -> 1 m cube at the cell corner (6, 6) -> (2, 2)
    assert props.box[2].tolist() == pytest.approx([2.0, 2.0, 0.0, 1.0, 1.0, 1.0, 0.0], abs=1e-6)


def test_top_k_and_threshold_and_no_nms():
    g = grid(1.0, half=4.0)
    assert heatmap_proposals(golden_maps(), layout(), g, 0.1, max_per_source=2).score.tolist() == \
        pytest.approx([0.75, 0.5])
    assert heatmap_proposals(golden_maps(), layout(), g, 0.3, 100).score.tolist() == pytest.approx([0.75, 0.5])
    assert len(heatmap_proposals(golden_maps(), layout(), g, 1.01, 100)) == 0
    # no NMS: two maxima one cell apart on different groups both stay, whatever their boxes overlap
    pd = maps(bsz=1)
    pd[0]['hm'][0, 0, 3, 3] = 0.0
    pd[1]['hm'][0, 0, 3, 4] = 0.0
    props = heatmap_proposals(pd, layout(), g, 0.1, 100)
    assert sorted(props.cell.tolist()) == [[3, 3], [3, 4]]


def test_student_proposals_carry_no_gradient():
    pd = golden_maps()
    for group in pd:
        for v in group.values():
            v.requires_grad_(True)
    props = heatmap_proposals(pd, layout(), grid(1.0, half=4.0), source=1)
    assert not props.box.requires_grad and not props.score.requires_grad
    assert props.source.tolist() == [1, 1, 1]


def test_gaussian_radius_golden():
    """CenterPoint's radius (its ``gaussian_radius``, overlap 0.1) for a box of h x w cells is the smallest of
    r1 = (b1 + sqrt(b1^2 - 4 c1)) / 2 (b1 = h + w, c1 = hw 0.9 / 1.1), r2 = (b2 + sqrt(b2^2 - 16 c2)) / 2
    (b2 = 2(h + w), c2 = 0.9 hw), r3 = (b3 + sqrt(b3^2 - 4 a3 c3)) / 2 (a3 = 0.4, b3 = -0.2(h + w), c3 = -0.9 hw).
    4 x 2 cells: r1 = (6 + sqrt(9.8182)) / 2 = 4.567, r2 = (12 + sqrt(28.8)) / 2 = 8.683,
    r3 = (-1.2 + sqrt(1.44 + 11.52)) / 2 = (-1.2 + 3.6) / 2 = 1.2 -> int 1 -> MIN_RADIUS 2 (or 1 with MIN_RADIUS 1).
    20 x 20 cells: r3 = (-8 + sqrt(64 + 576)) / 2 = 8.649 (r1 = 28.5, r2 = 52.6) -> 8."""
    g = grid(1.0, half=16.0)  # 32 x 32 cells of 1 m
    boxes = torch.tensor([[0.0, 0, 0, 4, 2, 1, 0], [0, 0, 0, 20, 20, 1, 0], [0, 0, 0, 1e30, 1e30, 1, 0]])
    assert gaussian_radius_cells(boxes, g, layout(min_radius=2)).tolist() == [2, 8, 32]  # capped at the map
    assert gaussian_radius_cells(boxes, g, layout(min_radius=1)).tolist() == [1, 8, 32]
    half_cells = grid(0.5, half=16.0)  # the same 4 x 2 m box is 8 x 4 cells there: r3 = (-2.4 + 7.2) / 2 = 2.4
    assert gaussian_radius_cells(boxes[:1], half_cells, layout(min_radius=1)).tolist() == [2]


def test_regions_gaussian_square_and_box():
    g = grid(1.0, half=4.0)
    props = heatmap_proposals(golden_maps(), layout(), g, 0.1, 100)
    square = region_boxes(props, g, layout(min_radius=2), 'gaussian')
    # the 4 x 2 m car: r = 2 -> a 5-cell (5 m) axis-aligned square centred on its peak cell's centre (-1.5, -2.5)
    assert square[0].tolist() == pytest.approx([-1.5, -2.5, -1.0, 5.0, 5.0, 1.5, 0.0], abs=1e-6)
    box = region_boxes(props, g, layout(), 'box')
    assert torch.equal(box, props.box)
    with pytest.raises(ValueError, match='REGION'):
        region_boxes(props, g, layout(), 'circle')
