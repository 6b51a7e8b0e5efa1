"""Building blocks: channel LayerNorm, NAFNet block, Restormer block (MDTA + GDFN), resampling,
and colour conversions. All modules take and return ``(B, C, H, W)`` tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ITU-R BT.601 (full range), the same luminance weights as OpenCV's RGB->grey.
_Y_WEIGHTS = (0.299, 0.587, 0.114)
_CB_SCALE = 2.0 * (1.0 - _Y_WEIGHTS[2])  # 1.772
_CR_SCALE = 2.0 * (1.0 - _Y_WEIGHTS[0])  # 1.402


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, 3, H, W)`` Y, Cb, Cr (Y in [0, 1], Cb/Cr centred on 0.5)."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb_to_ycbcr expects (B, 3, H, W), got {tuple(rgb.shape)}")
    r, g, b = rgb.unbind(1)
    y = _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b
    cb = (b - y) / _CB_SCALE + 0.5
    cr = (r - y) / _CR_SCALE + 0.5
    return torch.stack((y, cb, cr), 1)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`: ``(B, 3, H, W)`` -> RGB (not clipped)."""
    if ycbcr.ndim != 4 or ycbcr.shape[1] != 3:
        raise ValueError(f"ycbcr_to_rgb expects (B, 3, H, W), got {tuple(ycbcr.shape)}")
    y, cb, cr = ycbcr.unbind(1)
    r = y + _CR_SCALE * (cr - 0.5)
    b = y + _CB_SCALE * (cb - 0.5)
    # Solve Y = wr R + wg G + wb B for G (exact inverse, no rounded coefficients).
    g = (y - _Y_WEIGHTS[0] * r - _Y_WEIGHTS[2] * b) / _Y_WEIGHTS[1]
    return torch.stack((r, g, b), 1)


def rgb_to_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB -> ``(B, 1, H, W)`` BT.601 luminance (a 1-channel input is returned as is)."""
    if rgb.shape[1] == 1:
        return rgb
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb_to_luminance expects (B, 3, H, W) or (B, 1, H, W), got {tuple(rgb.shape)}")
    r, g, b = rgb.split(1, dim=1)
    return _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b


def replace_luminance(rgb: torch.Tensor, luminance: torch.Tensor) -> torch.Tensor:
    """RGB ``(B, 3, H, W)`` with its BT.601 luminance replaced by ``luminance`` ``(B, 1, H, W)``, chroma kept.

    Same as ``ycbcr_to_rgb(cat(luminance, rgb_to_ycbcr(rgb)[:, 1:]))`` (the inverse transform is
    linear in Y with coefficient 1 for each of R, G and B), in three passes instead of a dozen.
    Not clipped.
    """
    return rgb + (luminance - rgb_to_luminance(rgb))


class PointwiseConv(nn.Conv2d):
    """1x1 convolution ``(B, Cin, H, W) -> (B, Cout, H, W)`` (same parameters as ``nn.Conv2d``).

    For channels-last inputs it runs as one matrix product over the channel axis, which needs no
    copy in that layout; PyTorch's CPU convolution takes a slow im2col path for 1x1 kernels with
    small batches on one thread. Other layouts use the ordinary convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[-2:] != (1, 1) and x.is_contiguous(memory_format=torch.channels_last):
            weight = self.weight.view(self.out_channels, self.in_channels)
            return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)
        return super().forward(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of ``(B, C, H, W)`` (as in NAFNet and Restormer)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # Channels-last: the channel axis is the innermost, so one fused layer_norm kernel replaces
            # the nine element-wise passes below (about 2 % of nano's CPU forward).
            normalised = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return normalised.permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """NAFNet's activation: split channels in two halves and multiply them (``(B, 2C) -> (B, C)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block (Chen et al., ECCV 2022): depthwise conv + simple gate + simplified channel
    attention, then a gated feed-forward; both with learnable residual scales (zero init, so a
    fresh block is the identity)."""

    def __init__(self, channels: int, ffn_expansion: float = 2.0) -> None:
        super().__init__()
        hidden = channels * 2
        self.norm1 = LayerNorm2d(channels)
        self.expand = PointwiseConv(channels, hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.gate = SimpleGate()
        self.channel_attention = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                               nn.Conv2d(hidden // 2, hidden // 2, 1))
        self.project = PointwiseConv(hidden // 2, channels)
        ffn_hidden = int(round(channels * ffn_expansion)) * 2
        self.norm2 = LayerNorm2d(channels)
        self.ffn_expand = PointwiseConv(channels, ffn_hidden)
        self.ffn_project = PointwiseConv(ffn_hidden // 2, channels)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.depthwise(self.expand(self.norm1(x))))
        y = self.project(y * self.channel_attention(y))
        x = x + y * self.beta
        y = self.ffn_project(self.gate(self.ffn_expand(self.norm2(x))))
        return x + y * self.gamma


class MDTA(nn.Module):
    """Restormer's multi-Dconv-head transposed attention: attention across channels (C x C per
    head), so the cost is linear in the number of pixels."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = PointwiseConv(channels, channels * 3, bias=False)
        self.qkv_depthwise = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3,
                                       bias=False)
        self.project = PointwiseConv(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_depthwise(self.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(b, self.heads, c // self.heads, h * w), dim=-1)
        k = F.normalize(k.reshape(b, self.heads, c // self.heads, h * w), dim=-1)
        v = v.reshape(b, self.heads, c // self.heads, h * w)
        attention = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project((attention @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Restormer's gated-Dconv feed-forward network."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.expand = PointwiseConv(channels, hidden * 2, bias=False)
        self.depthwise = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project = PointwiseConv(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.depthwise(self.expand(x)).chunk(2, dim=1)
        return self.project(F.gelu(a) * b)


class TransformerBlock(nn.Module):
    """Restormer block: ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``."""

    def __init__(self, channels: int, heads: int, ffn_expansion: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attention = MDTA(channels, heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GDFN(channels, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def make_blocks(kind: str, channels: int, count: int, heads: int, ffn_expansion: float) -> nn.Sequential:
    """``count`` blocks of ``kind`` ("naf" or "restormer") at ``channels`` (empty Sequential for 0)."""
    if kind == "naf":
        return nn.Sequential(*(NAFBlock(channels, ffn_expansion) for _ in range(count)))
    if kind == "restormer":
        return nn.Sequential(*(TransformerBlock(channels, heads, ffn_expansion) for _ in range(count)))
    raise ValueError(f"unknown block type {kind!r}")


class Downsample(nn.Module):
    """Halve height and width: 2x2 stride-2 convolution ``(B, Cin, H, W) -> (B, Cout, H/2, W/2)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double height and width: 1x1 conv then pixel shuffle ``(B, Cin, H, W) -> (B, Cout, 2H, 2W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = PointwiseConv(in_channels, out_channels * 4, bias=False)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))
