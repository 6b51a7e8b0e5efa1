"""Sparse mixture of experts with a noisy top-k gate, routed per image.

Gate (Shazeer et al., ICLR 2017, "Outrageously large neural networks"): logits ``H(g) = g W_g``
plus, while training, Gaussian noise with a learned per-expert std ``softplus(g W_noise)``; the
top-k logits are soft-maxed and the rest are zero. ``g`` is the gate's conditioning vector: the
image's pooled features concatenated with a task prompt (TG-ECNet, ICML 2025: the degradation
estimate; fusion-aware gate: the pooled fused features). Balancing losses follow Shazeer et al.
and Cao et al. 2023: squared coefficient of variation of the per-expert importance (sum of gate
weights over the batch) and of the load (the smooth probability that an expert is in the top-k).

Routing is per image and *sparse*: the batch is grouped by expert and each expert runs only on the
images that selected it, so at inference ``top_k / num_experts`` of the expert cost is spent.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mex_fusion_ros.model.layers import PointwiseConv, SimpleGate


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation ``var / mean^2`` of a 1-D tensor (0 for a single value)."""
    if values.numel() <= 1:
        return values.new_zeros(())
    return values.float().var() / (values.float().mean().pow(2) + 1e-10)


class ConvExpert(nn.Module):
    """One expert: depthwise 3x3, gated 1x1 expansion, 1x1 projection ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, expansion: float = 1.0) -> None:
        super().__init__()
        hidden = max(1, int(round(channels * expansion)))
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.expand = PointwiseConv(channels, hidden * 2)
        self.gate = SimpleGate()
        self.project = PointwiseConv(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.gate(self.expand(self.depthwise(x))))


@dataclass
class MoEOutput:
    """What one gated MoE layer did for a batch of ``B`` images."""

    #: ``(B, C, H, W)`` input plus the weighted sum of the selected experts' outputs.
    features: torch.Tensor
    #: ``(B, k)`` expert indices chosen per image, in descending gate weight.
    indices: torch.Tensor
    #: ``(B, k)`` their gate weights (softmax over the top-k logits, sum 1 per image).
    weights: torch.Tensor
    #: Scalar ``cv^2(importance) + cv^2(load)`` balancing loss.
    balance_loss: torch.Tensor


class SparseMoE(nn.Module):
    """Noisy top-k gated experts, routed per image, residual: ``y = x + sum_k w_k E_k(x)``.

    ``condition_dim``: length of the conditioning vector passed to :meth:`forward` next to the
    features (the task prompt); the gate sees ``[mean-pooled x, condition]``.
    """

    def __init__(
        self,
        name: str,
        channels: int,
        num_experts: int,
        top_k: int,
        condition_dim: int,
        expert_expansion: float = 1.0,
        noise_floor: float = 1e-2,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"gate {name}: need 1 <= top_k <= num_experts, got {top_k}/{num_experts}")
        self.name = name
        self.num_experts = num_experts
        self.top_k = top_k
        self.noise_floor = noise_floor
        #: Set False to get the clean (deterministic) gate while training, e.g. for ablations.
        self.noisy_gating = True
        self.experts = nn.ModuleList(ConvExpert(channels, expert_expansion) for _ in range(num_experts))
        gate_in = channels + condition_dim
        # Zero init (Shazeer et al.): all experts start equally likely; the noise breaks ties.
        self.w_gate = nn.Parameter(torch.zeros(gate_in, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(gate_in, num_experts))

    def gate_logits(self, x: torch.Tensor, condition: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clean logits ``(B, N)`` and, when noisy gating is active, the noise std ``(B, N)``."""
        gate_input = torch.cat((x.mean(dim=(2, 3)), condition), dim=1)
        clean = gate_input @ self.w_gate
        if self.training and self.noisy_gating:
            return clean, F.softplus(gate_input @ self.w_noise) + self.noise_floor
        return clean, None

    def _load(self, clean: torch.Tensor, noisy: torch.Tensor, std: torch.Tensor,
              top_values: torch.Tensor) -> torch.Tensor:
        """Smooth per-expert load: sum over the batch of P(expert in top-k | other noise fixed)."""
        k = self.top_k
        threshold_if_in = top_values[:, k:k + 1]  # the (k+1)-th value: an expert in top-k must beat it
        threshold_if_out = top_values[:, k - 1:k]  # the k-th value: an expert outside must beat it
        normal = torch.distributions.Normal(clean.new_zeros(()), clean.new_ones(()))
        is_in = noisy > threshold_if_in
        prob_if_in = normal.cdf((clean - threshold_if_in) / std)
        prob_if_out = normal.cdf((clean - threshold_if_out) / std)
        return torch.where(is_in, prob_if_in, prob_if_out).sum(0)

    def route(self, x: torch.Tensor, condition: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Choose experts: ``(indices (B, k), weights (B, k), balance loss)``."""
        clean, std = self.gate_logits(x, condition)
        logits = clean + torch.randn_like(clean) * std if std is not None else clean
        k_plus = min(self.top_k + 1, self.num_experts)
        top_values, top_indices = logits.topk(k_plus, dim=1)
        indices = top_indices[:, : self.top_k]
        weights = top_values[:, : self.top_k].softmax(dim=1)
        gates = torch.zeros_like(logits).scatter(1, indices, weights)
        importance = gates.sum(0)
        if std is not None and self.top_k < self.num_experts:
            load = self._load(clean, logits, std, top_values)
        else:
            load = (gates > 0).float().sum(0)
        return indices, weights, cv_squared(importance) + cv_squared(load)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> MoEOutput:
        """``x`` ``(B, C, H, W)``, ``condition`` ``(B, condition_dim)`` -> :class:`MoEOutput`."""
        indices, weights, balance = self.route(x, condition)
        batch = x.shape[0]
        # Keep a channels-last input channels-last in the gathered sub-batches (fast 1x1 path).
        layout = (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
                  and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        # The residual sum starts from x itself: no zero buffer and no final addition.
        mixed = x.clone(memory_format=torch.preserve_format)
        for expert_index, expert in enumerate(self.experts):
            # Images that chose this expert (and in which top-k slot); others never reach it.
            rows, slots = (indices == expert_index).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            scale = weights[rows, slots].view(-1, 1, 1, 1)
            if rows.numel() == batch:
                # Every image chose it (rows come out sorted, one slot per image): skip the gather.
                mixed = torch.addcmul(mixed, expert(x), scale)
            elif rows.numel() == 1:
                # One image (the usual case: IR and visible share the encoder as a batch of two):
                # a slice is a view in either layout, so no gather copy and no scatter-add.
                row = int(rows[0])
                mixed[row:row + 1].addcmul_(expert(x[row:row + 1]), scale)
            else:
                subset = x.index_select(0, rows).contiguous(memory_format=layout)
                mixed = mixed.index_add(0, rows, expert(subset) * scale)
        return MoEOutput(features=mixed, indices=indices, weights=weights, balance_loss=balance)
