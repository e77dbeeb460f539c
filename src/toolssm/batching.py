"""Batching: trajectories to padded token tensors and loss masks, shared by training and evaluation."""

from __future__ import annotations

import torch

from toolssm.protocol import PAD, Trajectory, Vocab


def collate(trajs: list[Trajectory], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids (B, T) and the loss mask (B, T): True where the token is trained on."""
    width = max(len(t) for t in trajs)
    pad = vocab.id(PAD)
    tokens = torch.full((len(trajs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(trajs), width), dtype=torch.bool)
    for i, t in enumerate(trajs):
        tokens[i, : len(t)] = torch.tensor(vocab.ids(t.tokens))
        mask[i, : len(t)] = torch.tensor(t.loss_mask())
    return tokens, mask
