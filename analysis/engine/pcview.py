"""The first principal component of every layer, from the CKA batches' Grams: no extra forward passes.

Each probe batch's double-centred Gram is K_c = H K H = sum_i lambda_i u_i u_i' (H = I - 11'/n;
Kornblith et al. 2019, eq. 3): its eigenvalues are the squared singular values of the centred
activations and u_i their principal-component score directions over the batch's examples.
From the top pair (lambda_1, u_1) of each layer, per batch, `PCView` accumulates

* the first PC's share of variance, lambda_1 / tr(K_c) (the `pca` table);
* HSIC1 sums of the Grams with the first PC removed, K_c - lambda_1 u_1 u_1' (the Gram of the
  centred activations with their rank-1 top component taken out), so CKA without PC1 is
  computed exactly as CKA is (Nguyen, Raghu & Kornblith 2021, sec. 4.2; `cka_without_pc1`);
* the squared cosine (u_1^a . u_1^b)^2 between two layers' first-PC score vectors over the
  same batch, averaged over batches (`pc1_cos2`; sign-free, 1 = the same direction);
* per probe example (diagonal use only): its squared first-PC score lambda_1 u_1(i)^2 (the
  squared length of its centred activation's projection on the batch's first PC) and its
  squared distance to the batch mean, K_c(i, i), each averaged over the batches it was in; and
  from the scores its *share* of the layer's first PC over the probe set, its mean squared
  score over the sum of all examples' (a layer's shares sum to 1). The score, unlike u_1(i)^2
  (which sums to 1 within a batch, so that its scale is 1/n), does not depend on the batch's
  size: an example in a batch of 104 is not weighted 2.5 times one in a batch of 256.
  Examples with a large share carry the first PC: the *dominant datapoints* of Nguyen, Raghu
  & Kornblith, "On the Origins of the Block Structure Phenomenon in Neural Network
  Representations" (TMLR 2022).

Cost per batch: one batched eigendecomposition of the (R, n, n) centred Grams (about 7.5 ms
per layer at n = 256 in float64 on one core of the 2-core dev machine, 1.7x eigvalsh), and one
more R x R (or R_x x R_y) product for the PC1-removed sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from repsweep.analysis.engine.gram import double_centre, u_centre_


def top_component(grams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double-centre (R, n, n) Grams; return (K_c (R, n, n), lambda_1 (R,), u_1 (R, n))."""
    centred = double_centre(grams)
    evals, evecs = torch.linalg.eigh(centred)  # eigenvalues ascend
    return centred, evals[:, -1], evecs[:, :, -1]


@dataclass
class PCResult:
    """Sums of one accumulation (see the module docstring); results over the same layers add with ``+``."""

    pc1_sum_x: np.ndarray  # (R_x,) sum over batches of lambda_1 / tr(K_c)
    pc1_sum_y: np.ndarray  # (R_y,)
    removed_xy: np.ndarray  # (R_x, R_y) sum_b HSIC1 of the PC1-removed Grams
    removed_xx: np.ndarray  # (R_x,)
    removed_yy: np.ndarray  # (R_y,)
    cos2_sum_xy: np.ndarray  # (R_x, R_y) sum_b (u_1^x . u_1^y)^2
    score2_sum: np.ndarray | None  # (R_x, N) sum of lambda_1 u_1(i)^2
    norm2_sum: np.ndarray | None  # (R_x, N) sum of K_c(i, i)
    seen: np.ndarray | None  # (N,) batches each example was in
    n_batches: int

    def pc1_fraction(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean first-PC share of variance per row layer and per column layer."""
        return self.pc1_sum_x / self.n_batches, self.pc1_sum_y / self.n_batches

    def cka_without_pc1(self) -> np.ndarray:
        """(R_x, R_y) CKA of the Grams with each layer's first PC removed; NaN where undefined."""
        denom = np.sqrt(np.outer(self.removed_xx.clip(min=0), self.removed_yy.clip(min=0)))
        out = np.full(self.removed_xy.shape, np.nan)
        return np.divide(self.removed_xy, denom, out=out, where=denom > 0)

    def pc1_cos2(self) -> np.ndarray:
        """(R_x, R_y) mean over batches of the squared cosine of two layers' first-PC scores."""
        return self.cos2_sum_xy / self.n_batches

    def example_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row layer and probe example (R_x, N): its share of the layer's first PC over the probe
        set (mean squared score over the sum of all examples'), RMS first-PC score and RMS distance
        to the batch mean over the batches the example was in (NaN if in none)."""
        if self.score2_sum is None:
            raise ValueError("no per-example sums: accumulate with probe_size and examples")
        seen = np.where(self.seen > 0, self.seen, np.nan)[None, :]  # (1, N)
        score2 = self.score2_sum / seen  # (R_x, N)
        total = np.nansum(score2, axis=1, keepdims=True)  # (R_x, 1)
        share = np.divide(score2, total, out=np.full(score2.shape, np.nan), where=total > 0)
        return share, np.sqrt(score2), np.sqrt(self.norm2_sum / seen)

    def __add__(self, other: PCResult) -> PCResult:
        add = lambda a, b: None if a is None else a + b  # noqa: E731
        return PCResult(*(add(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__))


class PCView:
    """Accumulate the first-PC statistics of the module docstring, batch by batch.

    Symmetric use, ``update(grams)``: every layer in play, the result holds R x R matrices and,
    with ``probe_size`` given and ``examples`` passed, the per-example sums. Cross use,
    ``update(grams_x, grams_y)``: the R_x x R_y block and both sides' self terms.
    The Grams are the CKA engine's shifted linear Grams (`gram.shifted_grams`), unchanged here.
    """

    def __init__(self, *, probe_size: int | None = None) -> None:
        self.probe_size = probe_size
        self._sums: dict[str, torch.Tensor] = {}
        self.n_batches = 0

    def _add(self, name: str, value: torch.Tensor) -> None:
        with torch.inference_mode(False):
            if name in self._sums:
                self._sums[name] += value
            else:
                self._sums[name] = value.clone()

    def update(self, grams_x: torch.Tensor, grams_y: torch.Tensor | None = None,
               examples: torch.Tensor | None = None) -> None:
        """Add one batch: (R_x, n, n) Grams (and (R_y, n, n)); `examples` (n,) their probe indices."""
        n = grams_x.shape[-1]
        scale = 1.0 / (n * (n - 3))  # HSIC1 = <U(K), U(L)> / (n(n-3)) (Song et al. 2012)
        sides = []
        for g in (grams_x, grams_y) if grams_y is not None else (grams_x,):
            centred, lam, u = top_component(g)
            fraction = lam / centred.diagonal(dim1=-2, dim2=-1).sum(dim=-1)  # (R,)
            removed = centred - lam[:, None, None] * u[:, :, None] * u[:, None, :]  # K_c - l1 u1 u1'
            flat = u_centre_(removed).reshape(len(g), n * n)  # (R, n^2)
            sides.append((centred, lam, u, fraction, flat))
        (cx, lx, ux, fx, gx), (_, _, uy, fy, gy) = sides[0], sides[-1]
        self._add("pc1_x", fx)
        self._add("pc1_y", fy)
        self._add("removed_xy", gx @ gy.T * scale)
        self._add("removed_xx", (gx * gx).sum(dim=-1) * scale)
        self._add("removed_yy", (gy * gy).sum(dim=-1) * scale)
        self._add("cos2_xy", (ux @ uy.T) ** 2)
        if grams_y is None and self.probe_size is not None and examples is not None:
            idx = examples.to(grams_x.device)
            size = (len(grams_x), self.probe_size)
            zeros = lambda: torch.zeros(size, dtype=torch.float64, device=grams_x.device)  # noqa: E731
            self._add("score2", zeros().index_add_(1, idx, lx[:, None] * ux ** 2))
            self._add("norm2", zeros().index_add_(1, idx, cx.diagonal(dim1=-2, dim2=-1)))
            seen = torch.zeros(self.probe_size, dtype=torch.float64, device=grams_x.device)
            self._add("seen", seen.index_add_(0, idx, torch.ones(n, dtype=torch.float64, device=idx.device)))
        self.n_batches += 1

    def result(self) -> PCResult:
        """The sums so far."""
        if not self.n_batches:
            raise ValueError("no batch seen yet: call update() first")
        get = lambda k: self._sums[k].cpu().numpy().copy() if k in self._sums else None  # noqa: E731
        return PCResult(get("pc1_x"), get("pc1_y"), get("removed_xy"), get("removed_xx"), get("removed_yy"),
                        get("cos2_xy"), get("score2"), get("norm2"), get("seen"), self.n_batches)
