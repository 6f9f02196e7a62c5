"""Linear CKA between layer representations: the minibatch engine and full-batch CKA.

Nguyen, Raghu & Kornblith, "Do Wide and Deep Networks Learn the Same Things?" (ICLR 2021),
eq. 2: minibatch linear CKA with the unbiased HSIC estimator of Song et al. (JMLR 2012),

    HSIC1(K, L) = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))
    CKA(X, Y)   = sum_b HSIC1(K_b, L_b) / sqrt(sum_b HSIC1(K_b, K_b) * sum_b HSIC1(L_b, L_b))

with K = X X' the linear Gram matrix of a minibatch of n examples and K~ = K with its diagonal
zeroed. HSIC1(K, L) = <U(K), U(L)> / (n(n-3)) with U the U-centring of Szekely & Rizzo (Ann.
Stat. 2014, sec. 4.1), so each layer's Gram is built and U-centred once, flattened to a row of
G, and one matmul S += G G' / (n(n-3)) gives every layer pair (DESIGN.md, "The CKA engine").

The Gram matrices, their centring and the first principal component are computed in
`analysis/engine/gram.py`, whose docstring explains the numerics (float32 Grams, the shift by the
first example, NaN for constant layers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import torch

from repsweep.analysis.engine.gram import double_centre, pc1_fraction, shifted_grams, u_centre_
from repsweep.analysis.engine.pcview import PCView
from repsweep.analysis.engine.stream import batches, stream_batches
from repsweep.models.interface import RepresentationModel

logger = logging.getLogger(__name__)

MIN_BATCH = 4  # examples; HSIC1 divides by n(n-3) (Song et al. 2012), so it needs n >= 4
# What float32 activations promise: CKA to 1e-6 absolute. Their Grams round at float32's
# epsilon (1.2e-7 relative) in a summation order that changes with the thread count and CPU;
# measured: within 4.5e-8 of the float64 CKA of the same ResNets (benchmarks/RESULTS.md), and
# 1.4e-8 apart between 1 and 2 torch threads. float64 activations give float64 CKA (~1e-12).
FLOAT32_CKA_ATOL = 1e-6


# ------------------------------------------------------------------------------ results


@dataclass
class CKAResult:
    """HSIC1 sums of one accumulation (a tile, a pass, a run); results combine with ``+``.

    In the symmetric case (one set of layers) ``hsic_xy`` is the full R x R matrix and the
    column fields repeat the row fields.
    """

    hsic_xy: np.ndarray  # (R_x, R_y) float64: sum_b HSIC1(K_b, L_b)
    hsic_xx: np.ndarray  # (R_x,) float64: sum_b HSIC1(K_b, K_b)
    hsic_yy: np.ndarray  # (R_y,) float64: sum_b HSIC1(L_b, L_b)
    n_batches: int  # batches accumulated
    n_examples: int  # examples in those batches
    n_skipped: int  # batches skipped for having fewer than MIN_BATCH examples
    row_names: tuple[str, ...]
    col_names: tuple[str, ...]
    pc1_sum_x: np.ndarray | None = None  # (R_x,) sum over batches of the first-PC fraction
    pc1_sum_y: np.ndarray | None = None  # (R_y,)

    def cka(self) -> np.ndarray:
        """CKA matrix (R_x, R_y) float64; NaN where either layer's self-HSIC sum is <= 0."""
        defined = (self.hsic_xx > 0)[:, None] & (self.hsic_yy > 0)[None, :]  # (R_x, R_y)
        if not defined.all():
            logger.warning(
                "CKA undefined (NaN) for constant or zero-variance layers: rows %s, cols %s",
                [n for n, h in zip(self.row_names, self.hsic_xx) if not h > 0],
                [n for n, h in zip(self.col_names, self.hsic_yy) if not h > 0],
            )
        denom = np.sqrt(np.outer(self.hsic_xx.clip(min=0), self.hsic_yy.clip(min=0)))
        out = np.full(self.hsic_xy.shape, np.nan)
        return np.divide(self.hsic_xy, denom, out=out, where=defined)

    def pc1_fraction(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean first-PC variance fraction per row layer and per column layer, over batches."""
        if self.pc1_sum_x is None:
            raise ValueError("no first-PC sums in this result: accumulate with pc1=True")
        return self.pc1_sum_x / self.n_batches, self.pc1_sum_y / self.n_batches

    def __add__(self, other: CKAResult) -> CKAResult:
        if not isinstance(other, CKAResult):
            return NotImplemented
        if (self.row_names, self.col_names) != (other.row_names, other.col_names):
            raise ValueError(
                "cannot combine results over different layers: rows "
                f"{self.row_names} vs {other.row_names}, cols {self.col_names} vs {other.col_names}"
            )
        pc1 = self.pc1_sum_x is not None
        if pc1 != (other.pc1_sum_x is not None):
            raise ValueError("cannot combine a result with first-PC sums and one without")
        return CKAResult(
            hsic_xy=self.hsic_xy + other.hsic_xy,
            hsic_xx=self.hsic_xx + other.hsic_xx,
            hsic_yy=self.hsic_yy + other.hsic_yy,
            n_batches=self.n_batches + other.n_batches,
            n_examples=self.n_examples + other.n_examples,
            n_skipped=self.n_skipped + other.n_skipped,
            row_names=self.row_names,
            col_names=self.col_names,
            pc1_sum_x=self.pc1_sum_x + other.pc1_sum_x if pc1 else None,
            pc1_sum_y=self.pc1_sum_y + other.pc1_sum_y if pc1 else None,
        )


def combine(results: Iterable[CKAResult]) -> CKAResult:
    """Sum the HSIC sums and counts of separate runs over the same layers (tiles, passes)."""
    return reduce(lambda a, b: a + b, results)


# -------------------------------------------------------------------------- accumulator


class CKAAccumulator:
    """Accumulate minibatch HSIC1 sums for every pair of layers (DESIGN.md, "The CKA engine").

    Symmetric use, ``update(rows)``: the layers of every model in play; the result holds the
    full R x R matrix. Cross use (a tile), ``update(rows, cols)``: rows = layers of model
    group A, cols = layers of group B; the result holds the R_x x R_y block and both sides'
    self terms. Each call holds (R_x + R_y) n^2 float64 numbers, whatever the probe set's size.

    Parameters
    ----------
    row_names, col_names
        Layer names, for error messages and the result; default ``row0, row1, ...``.
        Giving ``col_names`` announces the cross use.
    pc1
        Also accumulate each layer's first-principal-component variance fraction
        (one batched ``eigvalsh`` of the (R, n, n) centred Grams per batch).
    device
        Where Grams and sums live; default: the device of the first batch's first layer.
    pc_view
        Also feed each batch's Grams to this `analysis.engine.pcview.PCView` (first-PC statistics:
        CKA without PC1, PC1 cosines, per-example shares), so they need no Grams of their own.
    """

    def __init__(
        self,
        *,
        row_names: Sequence[str] | None = None,
        col_names: Sequence[str] | None = None,
        pc1: bool = False,
        device: torch.device | str | None = None,
        pc_view: PCView | None = None,
    ) -> None:
        self.row_names = tuple(row_names) if row_names is not None else None
        self.col_names = tuple(col_names) if col_names is not None else None
        self.pc1 = pc1
        self.pc_view = pc_view
        self.device = torch.device(device) if device is not None else None
        self._cross: bool | None = True if col_names is not None else None
        # float64 sums, allocated by the first update; *_yy and *_y serve the cross case only
        self._hsic_xy: torch.Tensor | None = None  # (R_x, R_y)
        self._hsic_xx: torch.Tensor | None = None  # (R_x,)
        self._hsic_yy: torch.Tensor | None = None  # (R_y,)
        self._pc1_x: torch.Tensor | None = None  # (R_x,) sum of first-PC fractions
        self._pc1_y: torch.Tensor | None = None  # (R_y,)
        self.n_batches = self.n_examples = self.n_skipped = 0

    def _check_names(self, side: str, layers: Sequence[torch.Tensor]) -> tuple[str, ...]:
        """Validate one side's layer list against its names; return the names."""
        names = self.row_names if side == "rows" else self.col_names
        if len(layers) == 0:
            raise ValueError(f"{side}: expected a list of layer activations, got an empty list")
        if names is None:  # default names, fixed from the first batch on
            names = tuple(f"{side[:3]}{i}" for i in range(len(layers)))
            setattr(self, "row_names" if side == "rows" else "col_names", names)
        if len(layers) != len(names):
            raise ValueError(
                f"{side}: got {len(layers)} layers, expected {len(names)} ({', '.join(names)})"
            )
        return names

    def _allocate(self, n_rows: int, n_cols: int, device: torch.device) -> None:
        """Zero the sums; as normal tensors, so updates work in and out of inference mode."""
        self.device = self.device or device
        with torch.inference_mode(False):
            zeros = dict(dtype=torch.float64, device=self.device)
            self._hsic_xy = torch.zeros(n_rows, n_cols, **zeros)
            self._hsic_xx, self._pc1_x = torch.zeros(n_rows, **zeros), torch.zeros(n_rows, **zeros)
            self._hsic_yy, self._pc1_y = torch.zeros(n_cols, **zeros), torch.zeros(n_cols, **zeros)

    def update(
        self, rows: Sequence[torch.Tensor], cols: Sequence[torch.Tensor] | None = None,
        examples: torch.Tensor | None = None,
    ) -> None:
        """Add one minibatch: each layer's activations, first dimension = the batch's examples.

        Batches of fewer than MIN_BATCH examples are skipped and counted in ``n_skipped``.
        ``examples`` (n,): the batch's indices into the probe set, for the PC view's per-example sums.
        """
        cross = cols is not None
        if self._cross is None:
            self._cross = cross
        elif self._cross != cross:
            want = "update(rows, cols)" if self._cross else "update(rows)"
            raise ValueError(f"this accumulator is for {want}: every batch must use one form")
        row_names = self._check_names("rows", rows)
        col_names = self._check_names("cols", cols) if cols is not None else row_names
        n = rows[0].shape[0]
        if cols is not None and cols[0].shape[0] != n:
            raise ValueError(f"rows have {n} examples but cols have {cols[0].shape[0]}")
        if self._hsic_xy is None:
            self._allocate(len(row_names), len(col_names), rows[0].device)
        if n < MIN_BATCH:
            self.n_skipped += 1
            logger.debug("skipped a batch of %d examples (fewer than %d)", n, MIN_BATCH)
            return
        scale = 1.0 / (n * (n - 3))  # HSIC1 = <U(K), U(L)> / (n(n-3))

        # both sides' Grams first, so a non-finite layer raises before any sum changes
        g_x = shifted_grams(rows, row_names, self.device)  # (R_x, n, n)
        g_y = None if cols is None else shifted_grams(cols, col_names, self.device)  # (R_y, n, n)
        if self.pc_view is not None:
            self.pc_view.update(g_x, g_y, examples)
        if self.pc1:
            self._pc1_x += pc1_fraction(g_x)
            if g_y is not None:
                self._pc1_y += pc1_fraction(g_y)
        g_x = u_centre_(g_x).reshape(len(rows), n * n)  # (R_x, n^2)
        if g_y is None:
            self._hsic_xy.addmm_(g_x, g_x.T, alpha=scale)  # S += G G' / (n(n-3))
        else:
            g_y = u_centre_(g_y).reshape(len(cols), n * n)  # (R_y, n^2)
            self._hsic_xy.addmm_(g_x, g_y.T, alpha=scale)  # S_xy += G_x G_y' / (n(n-3))
            self._hsic_xx += torch.linalg.vector_norm(g_x, dim=-1) ** 2 * scale
            self._hsic_yy += torch.linalg.vector_norm(g_y, dim=-1) ** 2 * scale
        self.n_batches += 1
        self.n_examples += n

    def result(self) -> CKAResult:
        """The sums so far as a CKAResult (zeros if every batch was skipped)."""
        if self._hsic_xy is None:
            raise ValueError("no batch seen yet: call update() first")
        hsic_xy = self._hsic_xy.cpu().numpy().copy()
        if self._cross:
            col_names = self.col_names
            hsic_xx, hsic_yy = self._hsic_xx.cpu().numpy(), self._hsic_yy.cpu().numpy()
            pc1_x, pc1_y = self._pc1_x.cpu().numpy(), self._pc1_y.cpu().numpy()
        else:  # the self terms are the diagonal of the full matrix
            col_names = self.row_names
            hsic_xx = hsic_yy = np.diagonal(hsic_xy)
            pc1_x = pc1_y = self._pc1_x.cpu().numpy()
        return CKAResult(
            hsic_xy=hsic_xy,
            hsic_xx=hsic_xx.copy(),
            hsic_yy=hsic_yy.copy(),
            n_batches=self.n_batches,
            n_examples=self.n_examples,
            n_skipped=self.n_skipped,
            row_names=self.row_names,
            col_names=col_names,
            pc1_sum_x=pc1_x.copy() if self.pc1 else None,
            pc1_sum_y=pc1_y.copy() if self.pc1 else None,
        )


# ------------------------------------------------------------------- full-batch CKA


def linear_cka(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *, debiased: bool = False
) -> float:
    """Full-batch linear CKA of two representations of the same n examples, in float64.

    Parameters
    ----------
    x, y
        Activations (n, ...) as NumPy arrays or torch tensors; flattened per example.
    debiased
        False: Kornblith et al. 2019 (ICML), eqs. 3-4, HSIC0(K, L) = tr(K H L H)/(n-1)^2.
        True: the unbiased HSIC1 of Song et al. 2012 on the whole batch (n >= 4), i.e.
        Nguyen et al. 2021 eq. 2 with a single minibatch.

    Returns
    -------
    float
        CKA; NaN where undefined (a representation's self-HSIC <= 0, e.g. a constant one).
    """
    x, y = (torch.as_tensor(a).to(torch.float64) for a in (x, y))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples and y has {y.shape[0]}: they must match")
    if debiased and x.shape[0] < MIN_BATCH:
        raise ValueError(f"debiased CKA needs at least {MIN_BATCH} examples, got {x.shape[0]}")
    grams = shifted_grams([x, y.to(x.device)], ("x", "y"), x.device)  # (2, n, n)
    grams = u_centre_(grams) if debiased else double_centre(grams)
    flat = grams.reshape(2, -1)  # (2, n^2)
    hsic = flat @ flat.T  # (2, 2); normalisations cancel in CKA
    if hsic[0, 0] <= 0 or hsic[1, 1] <= 0:
        return float("nan")
    return float(hsic[0, 1] / torch.sqrt(hsic[0, 0] * hsic[1, 1]))


# ------------------------------------------------------------------ models end to end


def minibatch_cka(
    model_a: RepresentationModel,
    model_b: RepresentationModel,
    x: torch.Tensor,
    *,
    batch_size: int = 256,
    passes: int = 10,
    seed: int = 0,
    pc1: bool = False,
    device: torch.device | str | None = None,
) -> CKAResult:
    """Minibatch CKA between every layer of model_a (rows) and every layer of model_b (cols).

    Both models run in eval mode under ``torch.inference_mode`` on the same batches of the
    probe set ``x`` (``stream_batches``); their training flags are restored afterwards. Layer
    names come from each model's ``layer_info``, the forward passes from its
    ``inference_copy()`` (a faster equivalent, e.g. BatchNorm folded; models/interface.py).

    Returns
    -------
    CKAResult
        ``.cka()`` is the (L_a, L_b) matrix; ``hsic_xx`` / ``hsic_yy`` the self terms.
    """
    device = torch.device(device) if device is not None else next(model_a.parameters()).device
    names = [tuple(i.layer_name for i in m.layer_info(tuple(x.shape[1:]))) for m in (model_a, model_b)]
    acc = CKAAccumulator(row_names=names[0], col_names=names[1], pc1=pc1, device=device)
    training = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    try:
        run_a, run_b = model_a.inference_copy(), model_b.inference_copy()
        with torch.inference_mode():
            stream = stream_batches(len(x), batch_size=batch_size, passes=passes, seed=seed)
            for batch in batches(x, stream, device):
                acc.update(run_a.forward_layers(batch), run_b.forward_layers(batch))
    finally:
        model_a.train(training[0])
        model_b.train(training[1])
    return acc.result()
