"""Gram matrices of layer activations, their centring, and their first principal component.

The kernels of the CKA engine (`analysis/engine/cka.py`): each layer's linear Gram K = X X' of a
minibatch, U-centred for the unbiased HSIC (Song et al. 2012; Szekely & Rizzo 2014) or
double-centred (H K H) for principal components.

Numerics, chosen for speed without giving up float64 results:

* Grams are computed in the activations' dtype: float64 inputs give float64 Grams; float32
  (and half, bfloat16, integer) inputs give float32 Grams: the Gram is the only O(n^2 d) step,
  and float32 makes it about 5x faster on CPU (n = 256, d = 16,384, measured on the 2-core dev
  machine). Everything after the Gram (U-centring, products, sums) is float64.
* Before its Gram each layer is shifted by the batch's first example, x_i -> x_i - x_0. HSIC1
  and the double-centred Gram are unchanged by any shift (it adds terms a1' + 1a' to K,
  which U-centring and double centring remove), but the shifted Gram no longer carries the
  large common mean of post-ReLU activations, so float32 Grams keep their precision, and a
  constant layer gives an exactly zero Gram.
* CKA is NaN (undefined) where a layer's summed self-HSIC is <= 0: a constant or all-zero
  layer, or estimator noise on a near-constant one. Cross values of the unbiased estimator
  can be slightly negative; they are kept, not clamped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def shifted_grams(
    layers: Sequence[torch.Tensor], names: Sequence[str], device: torch.device
) -> torch.Tensor:
    """Linear Grams of each layer, shifted by the first example: R x (n, ...) -> (R, n, n) float64.

    Raises ValueError naming the layer if its batch size differs or its Gram is not finite
    (NaN or inf activations, or a float32 overflow).
    """
    n = layers[0].shape[0]
    grams = torch.empty(len(layers), n, n, dtype=torch.float64, device=device)
    for i, (x, name) in enumerate(zip(layers, names)):
        if x.shape[0] != n:
            raise ValueError(
                f"layer {name!r} has {x.shape[0]} examples, but layer {names[0]!r} has {n}: "
                "every layer of a batch must share its first dimension"
            )
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # see module doc
        x = features(x.detach()).to(device=device, dtype=dtype)  # (n, d)
        gram(x - x[:1], out=grams[i])  # shifted by the first example: see module docstring
    finite = torch.isfinite(grams.diagonal(dim1=-2, dim2=-1)).all(dim=-1)  # (R,)
    if not bool(finite.all()):
        bad = [names[i] for i in torch.nonzero(~finite).flatten().tolist()]
        raise ValueError(
            f"non-finite activations (NaN or inf) in layer(s) {bad}: CKA is undefined; "
            "check the model's outputs for these layers (diverged weights, overflow)"
        )
    return grams


def features(x: torch.Tensor) -> torch.Tensor:
    """Flatten (n, ...) activations to (n, d) in memory order, without a copy where possible.

    The Gram sums over features, so their order is free: a channels_last (n, C, H, W) batch
    is read as (n, H, W, C), which is a view, where reshape(n, -1) would copy it.
    """
    order = sorted(range(1, x.dim()), key=lambda i: -x.stride(i))  # outermost feature dim first
    return x.permute(0, *order).reshape(x.shape[0], -1)  # (n, d)


GRAM_BLOCK = 64  # examples per row block of a CPU Gram; measured best of 32/64/128 for n = 256


def gram(x: torch.Tensor, *, out: torch.Tensor) -> None:
    """out = x x' for x (n, d): on CPU with d > n, each block pair of the symmetric Gram once.

    Row blocks of GRAM_BLOCK examples: 10 of the 16 block products for n = 256, 1.2-1.25x
    faster than one matmul for d = 4,096-16,384 on the 2-core dev machine (MKL has no
    symmetric rank-k product in torch). On GPUs, and for narrow layers, one matmul is faster.
    """
    n, d = x.shape
    if x.device.type != "cpu" or d <= n:
        out.copy_(x @ x.T)
        return
    blocks = x.split(GRAM_BLOCK)
    for i, xi in enumerate(blocks):
        rows = slice(i * GRAM_BLOCK, i * GRAM_BLOCK + len(xi))
        for j in range(i, len(blocks)):
            cols = slice(j * GRAM_BLOCK, j * GRAM_BLOCK + len(blocks[j]))
            block = xi @ blocks[j].T  # (|rows|, |cols|)
            out[rows, cols] = block
            if j != i:
                out[cols, rows] = block.T


def u_centre_(grams: torch.Tensor) -> torch.Tensor:
    """U-centre a stack of symmetric Grams in place: (R, n, n) -> (R, n, n).

    Szekely & Rizzo 2014, sec. 4.1: for i != j, U(K)_ij = K~_ij - r_i/(n-2) - r_j/(n-2)
    + s/((n-1)(n-2)) with r the row sums and s the total sum of K~; U(K)_ii = 0.
    """
    n = grams.shape[-1]
    grams.diagonal(dim1=-2, dim2=-1).zero_()  # K~
    r = grams.sum(dim=-1)  # (R, n)
    s = r.sum(dim=-1)  # (R,)
    grams -= r[:, :, None] / (n - 2)
    grams -= r[:, None, :] / (n - 2)
    grams += (s / ((n - 1) * (n - 2)))[:, None, None]
    grams.diagonal(dim1=-2, dim2=-1).zero_()
    return grams


def double_centre(grams: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11'/n (Kornblith et al. 2019, eq. 3): (R, n, n) -> (R, n, n)."""
    return (
        grams
        - grams.mean(dim=-1, keepdim=True)
        - grams.mean(dim=-2, keepdim=True)
        + grams.mean(dim=(-2, -1), keepdim=True)
    )


def pc1_fraction(grams: torch.Tensor) -> torch.Tensor:
    """First principal component's share of variance per layer: (R, n, n) -> (R,).

    lambda_max(HKH) / tr(HKH): the eigenvalues of the double-centred Gram are the squared
    singular values of the centred features. NaN for a constant layer (0 / 0).
    """
    centred = double_centre(grams)
    top = torch.linalg.eigvalsh(centred)[:, -1]  # (R,) eigenvalues ascend
    return top / centred.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
