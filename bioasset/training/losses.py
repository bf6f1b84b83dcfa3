"""Training losses: cross-entropy (optionally class-weighted) and softmax focal loss.

torchvision ships only the binary (sigmoid) focal loss, so the multi-class one is here:
``FL = sum_c q_c (1 - p_c)^gamma (-log p_c)``, with ``q`` the (label-smoothed) target
distribution. With ``gamma=0`` it is exactly cross-entropy with the same label smoothing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017) for single-label classification.

    ``weight`` (per class, optional) weighs each sample by its true class, and the mean is taken
    over those weights, as ``nn.CrossEntropyLoss`` does.
    """

    def __init__(self, gamma: float = 2.0, *, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        num_classes = logits.shape[1]
        q = F.one_hot(target, num_classes).to(log_p.dtype)
        if self.label_smoothing:
            q = q * (1 - self.label_smoothing) + self.label_smoothing / num_classes
        per_sample = -(q * (1 - log_p.exp()).pow(self.gamma) * log_p).sum(dim=1)
        if self.weight is None:
            return per_sample.mean()
        sample_weight = self.weight[target]
        return (per_sample * sample_weight).sum() / sample_weight.sum()


def make_criterion(
    imbalance: str, *, class_weights: torch.Tensor, label_smoothing: float, focal_gamma: float
) -> nn.Module:
    """The training loss for a ``TrainingConfig.imbalance`` option."""
    if imbalance == "focal_loss":
        return FocalLoss(focal_gamma, label_smoothing=label_smoothing)
    weight = class_weights if imbalance == "loss_weights" else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
