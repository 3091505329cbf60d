"""Tiny hand-built models with channels-last maps, token sequences and window partitions (seeded)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.maxvit import WindowDepartition, WindowPartition

from isplit_export.models import ModelSpec, Preprocessing

SIZE = 32
PREP = Preprocessing(resize=36, crop=SIZE)


class ChannelsLastNet(nn.Module):
    """Conv stem, then a ConvNeXt/Swin-like channels-last stage: [B, H, W, C] between permutes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Linear(8, 16)
        self.act = nn.GELU()
        self.proj = nn.Linear(16, 12)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)  # [B, H, W, C]
        x = self.act(self.mlp(self.norm(x)))
        x = self.proj(x)
        x = x.permute(0, 3, 1, 2)  # back to [B, C, H, W]
        return self.head(torch.flatten(self.pool(x), 1))


class Block(nn.Module):
    """A pre-norm transformer encoder block (attention + MLP, both residual)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.attn(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class TinyViT(nn.Module):
    """A 2-block ViT: 8x8 patches of a 32x32 image -> 16 tokens + a class token, width 16."""

    def __init__(self, dim: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.5)
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # [B, N, D]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.ln(self.blocks(x))
        return self.head(x[:, 0])


class PartitionNet(nn.Module):
    """MaxViT-style window attention: [B, C, H, W] -> windows [B, G, P*P, C] -> back to [B, C, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.partition = WindowPartition()
        self.mix = nn.Linear(8, 8)
        self.departition = WindowDepartition()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # [B, 8, 16, 16]
        w = self.partition(x, 4)  # [B, 16, 16, 8]
        w = w + self.mix(w)
        x = self.departition(w, 4, 4, 4)
        x = torch.relu(self.conv(x))
        return self.head(x.mean((2, 3)))


def _spec(module: nn.Module) -> ModelSpec:
    return ModelSpec(module.eval(), PREP, [f"class{i}" for i in range(5)])


def channels_last_net() -> ModelSpec:
    torch.manual_seed(0)
    return _spec(ChannelsLastNet())


def tiny_vit() -> ModelSpec:
    torch.manual_seed(0)
    return _spec(TinyViT())


def partition_net() -> ModelSpec:
    torch.manual_seed(0)
    return _spec(PartitionNet())
