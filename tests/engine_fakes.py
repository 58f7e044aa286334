"""Tiny fake detector and dataset for engine unit tests (the integration tests use the real pieces)."""
import numpy as np
import torch
from torch import nn


class FakeDetector(nn.Module):
    """Linear regressor following the detector contract; has BN, a nested module and a direct parameter."""

    def __init__(self, in_dim=4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
        self.log_var = nn.Parameter(torch.zeros(1))  # a parameter on a non-leaf module
        self.frozen = nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.register_buffer('global_step', torch.LongTensor(1).zero_())
        self.nan_at = set()  # global steps at which the loss is made NaN

    def update_global_step(self):
        self.global_step += 1

    def forward(self, batch):
        pred = self.body(batch['x']).squeeze(-1) + self.log_var
        if self.training:
            loss = ((pred - batch['y']) ** 2).mean()
            if int(self.global_step) in self.nan_at:
                loss = loss * float('nan')
            return {'loss': loss}, {'mse': loss.item()}, {}
        return [{'pred': p} for p in pred], {}


class FakeDataset(torch.utils.data.Dataset):
    """Random regression samples; ``__getitem__`` draws NumPy noise (an augmentation) so RNG replay matters."""

    def __init__(self, n=12, seed=0):
        rng = np.random.RandomState(seed)
        self.x = rng.randn(n, 4).astype(np.float32)
        self.y = (self.x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        noise = np.random.normal(scale=0.01, size=4).astype(np.float32)
        return {'x': self.x[i] + noise, 'y': self.y[i], 'frame_id': str(i)}


def collate(samples):
    return {'x': np.stack([s['x'] for s in samples]), 'y': np.array([s['y'] for s in samples]),
            'frame_id': np.array([s['frame_id'] for s in samples]), 'batch_size': len(samples)}


def make_loader(n=12, batch_size=2, shuffle=True):
    return torch.utils.data.DataLoader(FakeDataset(n), batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                                       drop_last=True, num_workers=0)
