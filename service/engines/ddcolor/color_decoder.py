"""DDColor's multi-scale colour decoder: learned colour queries refined against image features.

A Mask2Former-style transformer decoder: each layer lets the queries cross-attend to one scale
of the pixel decoder's features (cycling through the scales), then self-attend, then pass an
FFN; all post-norm. The refined queries, through an MLP, are dotted with the full-resolution
image embedding, giving one channel per query. Names follow piddnad/DDColor
`basicsr/archs/ddcolor_arch.py` and `ddcolor_arch_utils/transformer_utils.py` (checkpoint keys).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

HIDDEN_DIM = 256
HEADS = 8
FFN_DIM = 2048
POSITION_TEMPERATURE = 10000.0


def sine_position_embedding(
    height: int, width: int, channels: int, device: torch.device
) -> torch.Tensor:
    """DETR's normalised sine embedding of a (height, width) grid: (height * width, channels).

    Always float32: upstream reports that half precision breaks it (the coordinates are divided
    by temperatures up to 10^4 before sin/cos, so fp16 loses the fine frequencies). It depends
    only on the grid size, never on the image, so every item of a batch shares it.
    """
    per_axis = channels // 2
    eps = 1e-6
    # Positions 1..n scaled to (0, 2 pi]: the grid's extent, whatever its size.
    ys = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps)
    xs = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps)
    index = torch.arange(per_axis, dtype=torch.float32, device=device)
    frequencies = POSITION_TEMPERATURE ** (
        2 * torch.div(index, 2, rounding_mode="floor") / per_axis
    )

    def encode(coords: torch.Tensor) -> torch.Tensor:
        angles = coords[:, None] * (2 * math.pi) / frequencies
        # Even channels take sin, odd ones cos, interleaved: sin, cos, sin, cos, ...
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    y_part = encode(ys)[:, None, :].expand(height, width, per_axis)
    x_part = encode(xs)[None, :, :].expand(height, width, per_axis)
    return torch.cat((y_part, x_part), dim=2).reshape(height * width, channels)


class CrossAttentionLayer(nn.Module):
    """Queries attend to image tokens (positions added to queries and keys), residual, norm."""

    def __init__(self) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(HIDDEN_DIM, HEADS, batch_first=True)
        self.norm = nn.LayerNorm(HIDDEN_DIM)

    def forward(
        self,
        queries: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
    ) -> torch.Tensor:
        attended, _ = self.multihead_attn(
            queries + query_pos, memory + pos, memory, need_weights=False
        )
        out: torch.Tensor = self.norm(queries + attended)
        return out


class SelfAttentionLayer(nn.Module):
    """Queries attend to each other (positions added to queries and keys), residual, norm."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(HIDDEN_DIM, HEADS, batch_first=True)
        self.norm = nn.LayerNorm(HIDDEN_DIM)

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        with_pos = queries + query_pos
        attended, _ = self.self_attn(with_pos, with_pos, queries, need_weights=False)
        out: torch.Tensor = self.norm(queries + attended)
        return out


class FFNLayer(nn.Module):
    """Linear, ReLU, Linear, residual, norm."""

    def __init__(self) -> None:
        super().__init__()
        self.linear1 = nn.Linear(HIDDEN_DIM, FFN_DIM)
        self.linear2 = nn.Linear(FFN_DIM, HIDDEN_DIM)
        self.norm = nn.LayerNorm(HIDDEN_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm(x + self.linear2(F.relu(self.linear1(x))))
        return out


class MLP(nn.Module):
    """`depth` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, depth: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (depth - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MultiScaleColorDecoder(nn.Module):
    """Scales' features and the image embedding (N, 256, H, W) -> (N, num_queries, H, W)."""

    def __init__(
        self, in_channels: Sequence[int], num_queries: int, num_scales: int, num_layers: int
    ) -> None:
        super().__init__()
        if len(in_channels) != num_scales:
            raise ValueError(f"{num_scales} scales need as many channel counts, got {in_channels}")
        self.num_scales = num_scales
        # Registration order follows upstream's, so a saved state dict lists keys the same way.
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer() for _ in range(num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer() for _ in range(num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer() for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(HIDDEN_DIM)
        self.query_feat = nn.Embedding(num_queries, HIDDEN_DIM)
        self.query_embed = nn.Embedding(num_queries, HIDDEN_DIM)
        self.level_embed = nn.Embedding(num_scales, HIDDEN_DIM)
        projections = [nn.Conv2d(c, HIDDEN_DIM, kernel_size=1) for c in in_channels]
        self.input_proj = nn.ModuleList(projections)
        self.color_embed = MLP(HIDDEN_DIM, HIDDEN_DIM, HIDDEN_DIM, depth=3)
        with torch.no_grad():
            # Upstream's initialisation (Mask2Former's), for generated checkpoints.
            for layers in (
                self.transformer_self_attention_layers,
                self.transformer_cross_attention_layers,
                self.transformer_ffn_layers,
            ):
                for p in layers.parameters():
                    if p.dim() > 1:
                        nn.init.xavier_uniform_(p)
            for proj in projections:
                nn.init.kaiming_uniform_(proj.weight, a=1)
                if proj.bias is not None:
                    nn.init.zeros_(proj.bias)

    def forward(
        self, scales: Sequence[torch.Tensor], image_embedding: torch.Tensor
    ) -> torch.Tensor:
        if len(scales) != self.num_scales:
            raise ValueError(f"expected {self.num_scales} feature scales, got {len(scales)}")
        memories = []
        positions = []
        for i, feature in enumerate(scales):
            _, _, height, width = feature.shape
            tokens = self.input_proj[i](feature).flatten(2).transpose(1, 2)  # (N, HW, C)
            memories.append(tokens + self.level_embed.weight[i])
            positions.append(sine_position_embedding(height, width, HIDDEN_DIM, feature.device))
        batch = image_embedding.shape[0]
        query_pos = self.query_embed.weight.expand(batch, -1, -1)
        queries = self.query_feat.weight.expand(batch, -1, -1)
        layers = zip(
            self.transformer_cross_attention_layers,
            self.transformer_self_attention_layers,
            self.transformer_ffn_layers,
            strict=True,
        )
        for i, (cross, self_attn, ffn) in enumerate(layers):
            level = i % self.num_scales
            queries = cross(queries, query_pos, memories[level], positions[level])
            queries = ffn(self_attn(queries, query_pos))
        colors = self.color_embed(self.decoder_norm(queries))  # (N, Q, C)
        return torch.einsum("nqc,nchw->nqhw", colors, image_embedding)
