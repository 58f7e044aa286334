"""Hand-made :class:`rdd.distill.context.KDContext` for KD-loss unit tests (no models needed)."""
from rdd.distill.context import HeadLayout, KDContext, ModelFacts
from rdd.geometry import BEVGrid

HEAD_ORDER = ('center', 'center_z', 'dim', 'rot', 'vel')
HEAD_CH = {'center': 2, 'center_z': 1, 'dim': 3, 'rot': 2, 'vel': 2}
CODE_W = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2, 1.0, 1.0)


def grid(cell, half=8.0, stride=1):
    """A square BEV grid of ``cell``-metre cells over ``[-half, half]`` m (map ``2*half/cell`` cells a side)."""
    return BEVGrid((-half, -half, -5.0, half, half, 3.0), (cell / stride, cell / stride, 0.2), stride)


def head_layout(class_names=('car',), groups=(('car',),), gaussian_overlap=0.1, min_radius=2):
    return HeadLayout(class_names=tuple(class_names), class_names_each_head=tuple(tuple(g) for g in groups),
                      head_order=HEAD_ORDER, head_channels=dict(HEAD_CH), code_weights=CODE_W,
                      gaussian_overlap=gaussian_overlap, min_radius=min_radius)


def context(t_grid=None, s_grid=None, t_ch=4, s_ch=2, mode='resample', head=None):
    """Teacher / student facts: one ``spatial_features_2d`` map each (``t_ch`` / ``s_ch`` channels), the same head
    layout (default one group, ``car``), grids default 2 m cells over +-8 m (8 x 8 maps)."""
    head = head or head_layout()
    teacher = ModelFacts(grid=t_grid or grid(2.0), feature_channels={'spatial_features_2d': t_ch}, head=head)
    student = ModelFacts(grid=s_grid or grid(2.0), feature_channels={'spatial_features_2d': s_ch}, head=head)
    return KDContext(teacher=teacher, student=student, grid_mismatch=mode)
