"""The losses of section 3.4, as small pure functions of tensors.

Every function takes already-selected tensors: which (source, target) pairs are available is decided
once, by :func:`pair_mask`, so a silenced sequence can never reach a loss as a target.
"""
from __future__ import annotations

import torch

__all__ = ["reconstruction_loss", "cycle_loss", "lsgan_discriminator_loss", "lsgan_generator_loss",
           "pair_mask"]


def reconstruction_loss(generated: torch.Tensor, target: torch.Tensor, weight: float = 10.0,
                        kind: str = "l1") -> torch.Tensor:
    """Eq. 1, L1 part: ``lambda_r * ||X'_{i->j} - X_j||_1`` (mean absolute error over pixels).

    ``kind="l2"``: the mean squared error instead (not the paper's). Where the source cannot decide
    the target voxel, L1's minimiser is the conditional median and L2's the conditional mean, the
    answer PSNR rewards and the simulator oracle's regressor gives.
    """
    if kind == "l1":
        return weight * (generated - target).abs().mean()
    if kind == "l2":
        return weight * (generated - target).square().mean()
    raise ValueError(f"reconstruction loss {kind!r}: must be 'l1' or 'l2'")


def cycle_loss(cycled: torch.Tensor, source: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """Eq. 3: ``||X''_{i->j->i} - X_i||_1`` (mean absolute error), times ``weight``."""
    return weight * (cycled - source).abs().mean()


def lsgan_discriminator_loss(d_real: torch.Tensor | None, d_fake: torch.Tensor | None) -> torch.Tensor:
    """Eq. 2, the discriminator's side: ``||D_j(X_j) - 1||_2 + ||D_j(X'_{i->j})||_2`` (mean squares).

    Either side may be absent (``None``) when a batch has no real image of sequence j, which is
    what happens when j is silenced in every subject of the batch.
    """
    terms = []
    if d_real is not None and d_real.numel():
        terms.append(((d_real - 1.0) ** 2).mean())
    if d_fake is not None and d_fake.numel():
        terms.append((d_fake ** 2).mean())
    if not terms:
        raise ValueError("lsgan_discriminator_loss needs real or fake scores")
    return sum(terms)


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 2, the generator's side (least squares): ``||D_j(X'_{i->j}) - 1||_2`` (mean squares)."""
    return ((d_fake - 1.0) ** 2).mean()


def pair_mask(available: torch.Tensor, source: int | torch.Tensor, target: int) -> torch.Tensor:
    """Which batch items may supervise ``source -> target``: both sequences available.

    ``available`` is ``(B, S)`` boolean; ``source`` one index or a ``(B,)`` tensor of indices.
    """
    available = available.bool()
    if isinstance(source, int):
        src = available[:, source]
    else:
        src = available.gather(1, source.long().reshape(-1, 1)).squeeze(1)
    return src & available[:, target]
