"""Classical geometric multigrid for A u = f with A a convolution stencil or a Gram operator σI + KᵀK.

One cycle on level l (γ = 1 for a V-cycle, 2 for a W-cycle; ν₁, ν₂ pre/post-smoothing steps):

    u ← S^{ν₁}(u, f)                        pre-smoothing
    r_c = R (f − A_l u)                      restriction of the residual
    e_c = 0; repeat γ times: e_c ← cycle_{l+1}(e_c, r_c)   (coarsest level: direct solve or smoothing)
    u ← u + P e_c                            coarse-grid correction, P = c·Rᵀ
    u ← S^{ν₂}(u, f)                         post-smoothing

Grids (``boundary`` of the operator):

* ``'zeros'`` — homogeneous Dirichlet, vertex-centred: the n interior points of a grid with n + 1
  intervals. Coarsening n → (n − 1)/2 needs n odd; R is the valid strided convolution (coarse points
  at fine 1, 3, …), so full weighting and P = 2^d·Rᵀ (linear interpolation) are the textbook ones.
* ``'circular'`` — periodic, n → n/2 (n even), coarse points at fine 0, 2, ….

Coarse operators: ``'galerkin'`` A_{l+1} = R A_l P, read off as a stencil by probing the interior
with unit impulses (exact for constant coefficients), or ``'rediscretise'`` A_{l+1} = 2^{−p}·A_l
for a stencil of derivative order p (the same stencil on the grid of spacing 2h).

Smoothers: damped Jacobi u ← u + ω D⁻¹(f − A u); Richardson u ← u + (ω/B)(f − A u) with B ≥ ‖A‖₂
(Schur bound for a stencil, σ + norm_bound(K)² for σI + KᵀK), convergent for 0 < ω < 2 when A is
symmetric positive semi-definite; red–black Gauss–Seidel (5-point/3-point star stencils): the
red points (even index sum), then the black ones, each from the current values of the other colour.

Why one module of about 650 lines: operators, transfers, smoothers and the cycle are one algorithm;
the allocation-free cycle (:class:`Multigrid` with ``fast``) reaches into the operators' taps, the
transfers' in-place kernels and the smoothers' scales, and :class:`GramOperator` ← :class:`StencilOperator`
← :func:`galerkin_operator` are only meaningful on its grids. The Krylov reference solvers at the end
(:func:`conjugate_gradient`, :func:`jacobi_solve`) are what the cycle is measured against.
"""
import math
from typing import Callable, List, Optional, Tuple, Union

import torch

from .conv import check_boundary, conv
from .norms import norm_bound
from .transfer import full_weighting, interpolation_scale, strided_conv, strided_conv_adjoint

__all__ = ['COARSE_OPERATORS', 'COARSE_SOLVES', 'CYCLES', 'GRID_BOUNDARIES', 'SMOOTHERS', 'GramOperator',
           'Multigrid', 'Smoother', 'StencilOperator', 'Transfer', 'check_cycle_settings', 'conjugate_gradient',
           'default_damping', 'dense_matrix', 'galerkin_operator', 'gram_stencil', 'grid_sizes', 'jacobi_solve',
           'max_levels', 'poisson_stencil']

SMOOTHERS = ('jacobi', 'richardson', 'red_black')
CYCLES = {'V': 1, 'W': 2}
GRID_BOUNDARIES = ('zeros', 'circular')
COARSE_SOLVES = ('direct', 'smooth')
COARSE_OPERATORS = ('galerkin', 'rediscretise')
# the transfer's boundary for each grid: a Dirichlet grid's interior restricts by a valid convolution
TRANSFER_BOUNDARY = {'zeros': 'neumann', 'circular': 'circular'}
MAX_DIRECT_UNKNOWNS = 4096


def poisson_stencil(dim: int, spacing: float = 1.0, channels: int = 1, dtype=None, device=None) -> torch.Tensor:
    """Weight ``[C, C, 3, …, 3]`` of the negative Laplacian −Δ_h: (2d·u_i − Σ_neighbours u_j)/h².

    dim = 1: [−1, 2, −1]/h²; dim = 2: the 5-point stencil; channels are independent.
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    if spacing <= 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    if channels < 1:
        raise ValueError(f"channels must be ≥ 1, got {channels}")
    star = torch.zeros([3] * dim, dtype=torch.float64)
    centre = [1] * dim
    star[tuple(centre)] = 2.0 * dim
    for a in range(dim):
        for s in (0, 2):
            index = list(centre)
            index[a] = s
            star[tuple(index)] = -1.0
    weight = torch.zeros([channels, channels] + [3] * dim, dtype=torch.float64)
    for c in range(channels):
        weight[c, c] = star / spacing ** 2
    return weight.to(dtype=dtype or torch.get_default_dtype(), device=device)


def default_damping(smoother: str, dim: int) -> float:
    """ω = 2d/(2d + 1) for Jacobi (2/3 in 1D, 4/5 in 2D: the best smoothing of the Laplacian's high
    frequencies), twice that for Richardson (whose ω is relative to B ≈ 2·diagonal), 1 for Gauss–Seidel."""
    omega = 2.0 * dim / (2.0 * dim + 1.0)
    if smoother == 'jacobi':
        return omega
    if smoother == 'richardson':
        return 2.0 * omega
    return 1.0


class StencilOperator:
    """A u = conv(u, W, boundary): a constant-coefficient stencil W ``[C, C, k, …]`` (odd k)."""

    def __init__(self, weight: torch.Tensor, boundary: str = 'zeros'):
        if weight.dim() < 3 or weight.shape[0] != weight.shape[1]:
            raise ValueError(f"a stencil operator needs a square weight [C, C, k, ...], got shape {list(weight.shape)}")
        if any(k % 2 == 0 for k in weight.shape[2:]):
            raise ValueError(f"a stencil needs odd (centred) kernel sizes, got {list(weight.shape[2:])}")
        self.weight = weight
        self.boundary = check_boundary(boundary)
        self.dim = weight.dim() - 2
        self.channels = weight.shape[0]
        # sparse fast path (a fixed single-channel stencil with zero/periodic padding): Σ_taps w·shift(u),
        # the same map as conv(u, W, boundary) without im2col's k^d-fold memory traffic
        self.taps: Optional[List[Tuple[List[int], float]]] = None
        if (self.channels == 1 and not weight.requires_grad and boundary in ('zeros', 'circular')
                and not weight.is_meta and weight.dim() <= 5):
            w = weight[0, 0]
            self.taps = [(idx, float(w[tuple(idx)])) for idx in torch.nonzero(w != 0).tolist()]

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        if self.taps is None or u.shape[1] != 1:
            return conv(u, self.weight, self.boundary)
        half = [(k - 1) // 2 for k in self.weight.shape[2:]]
        spec: List[int] = []
        for p in half[::-1]:
            spec += [p, p]
        mode = 'constant' if self.boundary == 'zeros' else 'circular'
        padded = torch.nn.functional.pad(u, spec, mode=mode)
        size = list(u.shape[2:])
        out = torch.zeros_like(u)
        for idx, value in self.taps:
            window = padded
            for a, (start, n) in enumerate(zip(idx, size)):
                window = window.narrow(2 + a, start, n)
            out.add_(window, alpha=value)
        return out

    def residual_into(self, u: torch.Tensor, f: torch.Tensor, out: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
        """f − A u written into ``out`` with the sparse taps and zero padding, allocation-free.

        ``padded`` is a zero-initialised buffer of u's size plus the halo (the halo is never written);
        u is copied into its interior unless u already is that interior view (the fast cycle keeps
        its iterates there, saving the copy).
        """
        assert self.taps is not None and self.boundary == 'zeros'
        size = list(u.shape[2:])
        half = [(k - 1) // 2 for k in self.weight.shape[2:]]
        interior = padded
        for a, (p, n) in enumerate(zip(half, size)):
            interior = interior.narrow(2 + a, p, n)
        if not (u.data_ptr() == interior.data_ptr() and u.stride() == interior.stride()):
            interior.copy_(u)
        for j, (idx, value) in enumerate(self.taps):
            window = padded
            for a, (start, n) in enumerate(zip(idx, size)):
                window = window.narrow(2 + a, start, n)
            if j == 0:
                torch.add(f, window, alpha=-value, out=out)
            else:
                out.add_(window, alpha=-value)
        return out

    @property
    def half_width(self) -> int:
        return max((k - 1) // 2 for k in self.weight.shape[2:])

    def diagonal(self) -> torch.Tensor:
        """Per-channel diagonal entries (the centre taps W[c, c, centre]), shape [C]."""
        centre = tuple((k - 1) // 2 for k in self.weight.shape[2:])
        return torch.diagonal(self.weight[(slice(None), slice(None)) + centre])

    def bound(self) -> torch.Tensor:
        """B ≥ ‖A‖₂ by the Schur test √(max row sum · max column sum) of |W| (exact for the Laplacian)."""
        a = self.weight.abs().flatten(2).sum(-1)  # [out, in]
        return torch.sqrt(a.sum(1).amax() * a.sum(0).amax())

    def rediscretise(self, order: int) -> 'StencilOperator':
        """The same stencil on the grid of spacing 2h for a derivative of order p: W·2^{−p}."""
        return StencilOperator(self.weight * 2.0 ** (-order), self.boundary)


def gram_stencil(weight: torch.Tensor) -> torch.Tensor:
    """Stencil G ``[C, C, 2k−1, …]`` of KᵀK for K the *full* convolution (zero extension) of ``weight``
    ``[H, C, k, …]``: G[o, c, j] = Σ_h Σ_i K[h, o, i]·K[h, c, i + j − (k − 1)] (the autocorrelation).

    conv(u, G, 'zeros') = TᵀT u with T the full convolution (output n + k − 1, every difference across
    the ends included: homogeneous Dirichlet), and conv(u, G, 'circular') = KᵀK u for the periodic K.
    """
    dim = weight.dim() - 2
    w = weight.transpose(0, 1)  # [C, H, k, …]
    pad = [k - 1 for k in weight.shape[2:]]
    if dim == 1:
        g = torch.nn.functional.conv1d(w, w, padding=pad)
    elif dim == 2:
        g = torch.nn.functional.conv2d(w, w, padding=pad)
    else:
        g = torch.nn.functional.conv3d(w, w, padding=pad)
    return g.transpose(0, 1).contiguous()


class GramOperator(StencilOperator):
    """A u = σ u + Kᵀ K u with K the convolution of ``weight`` ``[H, C, k, …]`` (symmetric positive
    semi-definite; definite for σ > 0). σI + τKᵀK is the implicit diffusion step's matrix.

    K is the full convolution for ``'zeros'`` (homogeneous Dirichlet: the differences across both ends
    count, so the forward difference gives the Dirichlet Laplacian) and the periodic one for
    ``'circular'``; A is applied as the stencil :func:`gram_stencil` + σ at the centre.
    """

    def __init__(self, weight: torch.Tensor, boundary: str = 'zeros', shift: float = 0.0):
        if weight.dim() < 3:
            raise ValueError(f"expected a weight [H, C, k, ...], got shape {list(weight.shape)}")
        if shift < 0:
            raise ValueError(f"shift σ must be ≥ 0 (σI + KᵀK positive semi-definite), got {shift}")
        if boundary not in GRID_BOUNDARIES:
            raise ValueError(f"a Gram operator supports boundary {GRID_BOUNDARIES}, got {boundary!r}")
        g = gram_stencil(weight)
        if shift != 0.0:
            centre = (slice(None), slice(None)) + tuple((k - 1) // 2 for k in g.shape[2:])
            eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
            g = g.clone()
            g[centre] = g[centre] + shift * eye
        super().__init__(g, boundary)
        self.kernel = weight
        self.shift = float(shift)

    def bound(self) -> torch.Tensor:
        """B ≥ ‖A‖₂: σ + norm_bound(K)² (the full and periodic convolutions are bounded by the symbol sup)."""
        b = norm_bound(self.kernel.detach(), 'zeros').to(self.weight.dtype)
        return self.shift + b * b


Operator = Union[StencilOperator, GramOperator]


class Transfer:
    """R (strided convolution with ``weight``) and P = c·Rᵀ between a grid of ``boundary`` and its coarse grid."""

    def __init__(self, weight: torch.Tensor, boundary: str, scale: float):
        if boundary not in GRID_BOUNDARIES:
            raise ValueError(f"multigrid grids support boundary {GRID_BOUNDARIES}, got {boundary!r}")
        self.weight = weight
        self.mode = TRANSFER_BOUNDARY[boundary]
        self.scale = scale

    def restrict(self, u: torch.Tensor) -> torch.Tensor:
        return strided_conv(u, self.weight, self.mode)

    def prolong(self, v: torch.Tensor, size: List[int]) -> torch.Tensor:
        return self.scale * strided_conv_adjoint(v, self.weight, size, self.mode)


def _every_other(x: torch.Tensor, axis: int, start: int, count: int) -> torch.Tensor:
    """x[..., start : start + 2·count : 2, ...] along ``axis`` (a view)."""
    index = [slice(None)] * x.dim()
    index[axis] = slice(start, start + 2 * count - 1, 2)
    return x[tuple(index)]


def full_weighting_into(x: torch.Tensor, out: torch.Tensor, axis: int) -> torch.Tensor:
    """Dirichlet full weighting along one axis, allocation-free: out_i = (x_{2i} + 2x_{2i+1} + x_{2i+2})/4."""
    m = out.shape[axis]
    torch.add(_every_other(x, axis, 0, m), _every_other(x, axis, 1, m), alpha=2.0, out=out)
    out.add_(_every_other(x, axis, 2, m))
    return out.mul_(0.25)


def interpolate_add(x: torch.Tensor, out: torch.Tensor, axis: int, accumulate: bool) -> torch.Tensor:
    """Dirichlet linear interpolation along one axis into ``out`` (added to it if ``accumulate``):
    fine 2i+1 ← x_i, fine 2i ← (x_{i−1} + x_i)/2 with x_{−1} = x_m = 0."""
    m = x.shape[axis]
    if not accumulate:
        out.zero_()
    _every_other(out, axis, 1, m).add_(x)
    if m > 1:
        inner = _every_other(out, axis, 2, m - 1)
        inner.add_(x.narrow(axis, 0, m - 1), alpha=0.5).add_(x.narrow(axis, 1, m - 1), alpha=0.5)
    out.narrow(axis, 0, 1).add_(x.narrow(axis, 0, 1), alpha=0.5)
    out.narrow(axis, 2 * m, 1).add_(x.narrow(axis, m - 1, 1), alpha=0.5)
    return out


def coarsen_size(n: int, boundary: str) -> int:
    """Coarse length of a grid of n points: (n − 1)/2 (Dirichlet, n odd) or n/2 (periodic, n even); −1 if
    the grid cannot be coarsened."""
    if boundary == 'zeros':
        return (n - 1) // 2 if n % 2 == 1 and n >= 3 else -1
    return n // 2 if n % 2 == 0 and n >= 4 else -1


def max_levels(n: int, boundary: str) -> int:
    """How many grids (the finest included) a length-n axis allows."""
    levels = 1
    while coarsen_size(n, boundary) >= 1:
        n = coarsen_size(n, boundary)
        levels += 1
    return levels


def grid_sizes(size: List[int], levels: int, boundary: str) -> List[List[int]]:
    """Spatial sizes of the ``levels`` grids, finest first; ValueError naming the limit if too many."""
    if boundary not in GRID_BOUNDARIES:
        raise ValueError(f"multigrid grids support boundary {GRID_BOUNDARIES}, got {boundary!r}")
    if levels < 1:
        raise ValueError(f"levels must be ≥ 1, got {levels}")
    rule = "odd sizes n = 2^(L−1)·m − 1 (Dirichlet)" if boundary == 'zeros' else "sizes divisible by 2^(L−1) (periodic)"
    for n in size:
        limit = max_levels(n, boundary)
        if levels > limit:
            raise ValueError(f"levels={levels} is more than a grid of size {list(size)} allows with boundary "
                             f"{boundary!r}: at most {limit} for size {n} (needs {rule})")
    sizes = [list(size)]
    for _ in range(levels - 1):
        sizes.append([coarsen_size(n, boundary) for n in sizes[-1]])
    return sizes


def galerkin_operator(op: Operator, transfer: Transfer) -> StencilOperator:
    """The coarse operator R A P as a stencil, probed with one unit impulse per channel in the interior.

    Exact for constant coefficients away from the boundary (and everywhere for Dirichlet Poisson with
    full weighting and linear interpolation, where R A P = A_{2h}). Differentiable in A's and R's weights.
    """
    dim = op.dim
    c = op.channels
    hr = (transfer.weight.shape[-1] - 1) // 2
    # R A P δ_j reaches coarse i only if |2(i − j)| ≤ 2·h_R + h_A (fine half-widths of R, Rᵀ and A)
    width = (2 * hr + op.half_width) // 2
    m = 2 * width + 3
    fine = 2 * m + 1 if transfer.mode == 'neumann' else 2 * m
    w = transfer.weight
    delta = torch.zeros([c, c] + [m] * dim, dtype=w.dtype, device=w.device)
    centre = m // 2
    for ch in range(c):
        delta[(ch, ch) + (centre,) * dim] = 1.0
    out = transfer.restrict(op(transfer.prolong(delta, [fine] * dim)))  # [probe c, out o, *coarse]
    window = out[(slice(None), slice(None)) + (slice(centre - width, centre + width + 1),) * dim]
    # cross-correlation: out_i = W[centre − i + width] → W = flip(window); weight[o, c] from probe c
    stencil = window.flip(list(range(2, 2 + dim))).transpose(0, 1).contiguous()
    return StencilOperator(stencil, op.boundary)


def _parity_masks(size: List[int], dtype, device) -> Tuple[torch.Tensor, torch.Tensor]:
    total = torch.zeros(size, dtype=torch.long, device=device)
    for a, n in enumerate(size):
        shape = [1] * len(size)
        shape[a] = n
        total = total + torch.arange(n, device=device).reshape(shape)
    red = (total % 2 == 0).to(dtype)
    return red, 1.0 - red


def check_red_black(op: Operator) -> None:
    """Red–black Gauss–Seidel is Gauss–Seidel only for a single-channel star stencil (red couples to black)."""
    if not isinstance(op, StencilOperator) or op.channels != 1 or any(k != 3 for k in op.weight.shape[2:]):
        raise ValueError("red-black Gauss-Seidel needs a single-channel 3-point/5-point star stencil "
                         "[1, 1, 3, ...]; use coarse_operator='rediscretise' (Galerkin stencils of 2D "
                         f"problems are 9-point) or smoother='jacobi'; got {type(op).__name__} with weight "
                         f"{list(op.weight.shape)}")
    w = op.weight[0, 0]
    index = torch.nonzero(w != 0)
    if bool(((index - 1).abs().sum(1) % 2 == 0).logical_and((index - 1).abs().sum(1) > 0).any()):
        raise ValueError("red-black Gauss-Seidel needs a star stencil (no diagonal taps): this stencil couples "
                         "points of the same colour")


class Smoother:
    """S(u, f) applied ``steps`` times: damped Jacobi, Richardson or red–black Gauss–Seidel on ``op``."""

    def __init__(self, op: Operator, kind: str, damping: float, size: List[int]):
        if kind not in SMOOTHERS:
            raise ValueError(f"smoother must be one of {SMOOTHERS}, got {kind!r}")
        if not 0.0 < damping < 2.0:
            raise ValueError(f"damping ω must be in (0, 2) (non-positive or ≥ 2 does not smooth), got {damping}")
        self.op = op
        self.kind = kind
        self.damping = damping
        view = [1, -1] + [1] * op.dim
        if kind == 'richardson':
            self.scale = (damping / op.bound()).reshape([1] * (op.dim + 2))
        else:
            diag = op.diagonal()
            if bool((diag <= 0).any()):
                raise ValueError(f"{kind} smoothing needs a positive diagonal, got {diag.tolist()}")
            self.scale = (damping / diag).reshape(view)
        if kind == 'red_black':
            check_red_black(op)
            self.masks = _parity_masks(size, op.weight.dtype, op.weight.device)

    def __call__(self, u: torch.Tensor, f: torch.Tensor, steps: int) -> torch.Tensor:
        for _ in range(steps):
            if self.kind == 'red_black':
                for mask in self.masks:
                    u = u + mask * self.scale * (f - self.op(u))
            else:
                u = u + self.scale * (f - self.op(u))
        return u


def dense_matrix(op: Operator, size: List[int]) -> torch.Tensor:
    """The matrix of ``op`` on a grid of ``size`` (columns = images of the unit vectors, C-major order)."""
    c = op.channels
    unknowns = c * math.prod(size)
    eye = torch.eye(unknowns, dtype=op.weight.dtype, device=op.weight.device).reshape([unknowns, c] + list(size))
    return op(eye).reshape(unknowns, unknowns).T


def check_cycle_settings(levels: int, cycle: str = 'V', smoother: str = 'jacobi', damping: Optional[float] = None,
                         pre_smooth: int = 2, post_smooth: int = 2, coarse_solve: str = 'direct',
                         coarse_steps: int = 20, coarse_operator: str = 'galerkin') -> None:
    """Raise a ValueError naming the setting, what it accepts and what came, for the settings of a cycle.

    Shared by :class:`Multigrid` and :class:`pdeblocks.layers.MultigridCycle`: levels L ≥ 1, cycle in
    ``CYCLES``, smoother in ``SMOOTHERS``, damping ω ∈ (0, 2) (or None: :func:`default_damping`),
    ν₁, ν₂ and coarse steps ≥ 0, coarse solve in ``COARSE_SOLVES``, coarse operator in ``COARSE_OPERATORS``.
    """
    if levels < 1:
        raise ValueError(f"levels must be ≥ 1, got {levels}")
    for name, value, allowed in (('cycle', cycle, tuple(CYCLES)), ('smoother', smoother, SMOOTHERS),
                                 ('coarse_solve', coarse_solve, COARSE_SOLVES),
                                 ('coarse_operator', coarse_operator, COARSE_OPERATORS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if damping is not None and not 0.0 < damping < 2.0:
        raise ValueError(f"damping ω must be in (0, 2) (non-positive or ≥ 2 does not smooth), got {damping}")
    for name, steps in (('pre_smooth', pre_smooth), ('post_smooth', post_smooth), ('coarse_steps', coarse_steps)):
        if steps < 0:
            raise ValueError(f"{name} must be ≥ 0, got {steps}")


class Multigrid:
    """A grid hierarchy for A u = f on signals of spatial ``size`` and the V/W-cycle on it.

    Args:
        operator: a :class:`StencilOperator` or :class:`GramOperator` on the finest grid.
        size: finest spatial size (odd sizes 2^(L−1)·m − 1 for Dirichlet, multiples of 2^(L−1) for periodic).
        levels: number of grids L, the finest included (1: the coarsest solve on the fine grid).
        cycle: ``'V'`` (γ = 1) or ``'W'`` (γ = 2).
        smoother: ``'jacobi'``, ``'richardson'`` or ``'red_black'``; ``damping`` ω (default
            :func:`default_damping`), ``pre_smooth`` ν₁ and ``post_smooth`` ν₂.
        coarse_solve: ``'direct'`` (dense pseudo-inverse of the coarsest operator, at most 4096 unknowns)
            or ``'smooth'`` (``coarse_steps`` smoothing steps).
        coarse_operator: ``'galerkin'`` (R A P) or ``'rediscretise'`` (2^{−order}·A, stencils only).
        restriction: weight of R (default full weighting); ``scale`` c of P = c·Rᵀ (default 2^d).
    """

    def __init__(self, operator: Operator, size: List[int], levels: int, cycle: str = 'V', smoother: str = 'jacobi',
                 damping: Optional[float] = None, pre_smooth: int = 2, post_smooth: int = 2,
                 coarse_solve: str = 'direct', coarse_steps: int = 20, coarse_operator: str = 'galerkin',
                 order: int = 2, restriction: Optional[torch.Tensor] = None, scale: Optional[float] = None):
        check_cycle_settings(levels, cycle, smoother, damping, pre_smooth, post_smooth, coarse_solve, coarse_steps,
                             coarse_operator)
        if coarse_operator == 'rediscretise' and not isinstance(operator, StencilOperator):
            raise ValueError("coarse_operator='rediscretise' needs a StencilOperator; use 'galerkin' for σI + KᵀK")
        if len(size) != operator.dim:
            raise ValueError(f"size needs {operator.dim} entries for a {operator.dim}D operator, got {list(size)}")
        dim = operator.dim
        self.sizes = grid_sizes(list(size), levels, operator.boundary)
        self.levels = levels
        self.gamma = CYCLES[cycle]
        self.cycle_name = cycle
        self.pre_smooth = pre_smooth
        self.post_smooth = post_smooth
        self.coarse_steps = coarse_steps
        self.coarse_solve = coarse_solve
        omega = default_damping(smoother, dim) if damping is None else float(damping)
        w = operator.weight
        restriction_default = restriction is None
        if restriction is None:
            restriction = full_weighting(dim, operator.channels, dtype=w.dtype, device=w.device)
        if list(restriction.shape[:2]) != [operator.channels, operator.channels]:
            raise ValueError(f"restriction weight must map {operator.channels} to {operator.channels} channels, "
                             f"got shape {list(restriction.shape)}")
        self.transfer = Transfer(restriction, operator.boundary, interpolation_scale(dim) if scale is None else scale)
        self.operators: List[Operator] = [operator]
        for _ in range(levels - 1):
            fine = self.operators[-1]
            if coarse_operator == 'galerkin':
                self.operators.append(galerkin_operator(fine, self.transfer))
            else:
                assert isinstance(fine, StencilOperator)
                self.operators.append(fine.rediscretise(order))
        self.smoothers = [Smoother(op, smoother, omega, s) for op, s in zip(self.operators, self.sizes)]
        # allocation-free path: fixed single-channel stencils, Dirichlet grid, full weighting (see cycle)
        self.fast = (restriction_default and operator.boundary == 'zeros' and scale is None
                     and all(isinstance(op, StencilOperator) and op.taps is not None for op in self.operators))
        self.workspace: dict = {}
        self.coarse_inverse: Optional[torch.Tensor] = None
        if coarse_solve == 'direct':
            unknowns = operator.channels * math.prod(self.sizes[-1])
            if unknowns > MAX_DIRECT_UNKNOWNS:
                raise ValueError(f"a direct coarsest solve needs at most {MAX_DIRECT_UNKNOWNS} unknowns, the coarsest "
                                 f"grid {self.sizes[-1]} × {operator.channels} channels has {unknowns}: use more "
                                 f"levels or coarse_solve='smooth'")
            self.coarse_inverse = torch.linalg.pinv(dense_matrix(self.operators[-1], self.sizes[-1]))

    def residual(self, u: torch.Tensor, f: torch.Tensor, level: int = 0) -> torch.Tensor:
        """f − A_l u."""
        return f - self.operators[level](u)

    def check(self, f: torch.Tensor) -> None:
        op = self.operators[0]
        expected = [op.channels] + self.sizes[0]
        if f.dim() != op.dim + 2 or list(f.shape[1:]) != expected:
            raise ValueError(f"expected f of shape [batch, {', '.join(map(str, expected))}] for this hierarchy, "
                             f"got {list(f.shape)}")

    def cycle(self, u: torch.Tensor, f: torch.Tensor, level: int = 0) -> torch.Tensor:
        """One V- or W-cycle for A_l u = f starting from u; returns the new u (u itself is not modified).

        Fixed single-channel stencils on a Dirichlet grid with full weighting take an allocation-free
        path that computes the same cycle with fewer passes over memory: preallocated buffers per
        level (fresh large allocations cost page faults), iterates kept inside zero-haloed buffers
        (no copy before each stencil application), in-place updates.
        """
        if self.fast and not (u.requires_grad or f.requires_grad):
            x = self._interior(level, u)
            x.copy_(u)
            return self._cycle_inplace(x, f, level).clone()
        return self._cycle(u, f, level)

    def _buffer(self, level: int, name: str, like: torch.Tensor, shape: List[int]) -> torch.Tensor:
        key = (level, name)
        buf = self.workspace.get(key)
        if buf is None or list(buf.shape) != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.zeros(shape, dtype=like.dtype, device=like.device)
            self.workspace[key] = buf
        return buf

    def _padded(self, level: int, like: torch.Tensor) -> torch.Tensor:
        """The zero-haloed buffer of level ``level`` (halo = the stencil's half-width)."""
        op = self.operators[level]
        half = [(k - 1) // 2 for k in op.weight.shape[2:]]
        shape = list(like.shape[:2]) + [n + 2 * p for n, p in zip(self.sizes[level], half)]
        return self._buffer(level, 'padded', like, shape)

    def _interior(self, level: int, like: torch.Tensor) -> torch.Tensor:
        x = self._padded(level, like)
        op = self.operators[level]
        for a, (k, n) in enumerate(zip(op.weight.shape[2:], self.sizes[level])):
            x = x.narrow(2 + a, (k - 1) // 2, n)
        return x

    def _residual(self, level: int, u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        op = self.operators[level]
        assert isinstance(op, StencilOperator)
        return op.residual_into(u, f, self._buffer(level, 'r', u, list(u.shape)), self._padded(level, u))

    def _smooth_inplace(self, level: int, u: torch.Tensor, f: torch.Tensor, steps: int) -> torch.Tensor:
        smoother = self.smoothers[level]
        scale = float(smoother.scale)  # one channel on the fast path
        for _ in range(steps):
            if smoother.kind == 'red_black':
                for mask in smoother.masks:
                    u.addcmul_(self._residual(level, u, f), mask, value=scale)
            else:
                u.add_(self._residual(level, u, f), alpha=scale)
        return u

    def _cycle_inplace(self, u: torch.Tensor, f: torch.Tensor, level: int) -> torch.Tensor:
        if level == self.levels - 1:
            if self.coarse_inverse is not None:
                flat = f.reshape(f.shape[0], -1)
                u.copy_((flat @ self.coarse_inverse.T.to(f.dtype)).reshape(f.shape))
                return u
            return self._smooth_inplace(level, u, f, self.coarse_steps)
        dim = u.dim() - 2
        u = self._smooth_inplace(level, u, f, self.pre_smooth)
        coarse = self.sizes[level + 1]
        x = self._residual(level, u, f)
        for a in range(dim):  # separable full weighting, axis by axis
            shape = list(u.shape[:2]) + coarse[:a + 1] + self.sizes[level][a + 1:]
            x = full_weighting_into(x, self._buffer(level, f'R{a}', u, shape), 2 + a)
        r_coarse = x
        e = self._interior(level + 1, u)
        e.zero_()
        for _ in range(self.gamma):
            e = self._cycle_inplace(e, r_coarse, level + 1)
        x = e
        for a in range(dim - 1, 0, -1):  # separable linear interpolation; the last axis adds into u
            shape = list(u.shape[:2]) + coarse[:a] + self.sizes[level][a:]
            x = interpolate_add(x, self._buffer(level, f'P{a}', u, shape), 2 + a, accumulate=False)
        interpolate_add(x, u, 2, accumulate=True)
        return self._smooth_inplace(level, u, f, self.post_smooth)

    def _cycle(self, u: torch.Tensor, f: torch.Tensor, level: int = 0) -> torch.Tensor:
        if level == self.levels - 1:
            if self.coarse_inverse is not None:
                flat = f.reshape(f.shape[0], -1)
                return (flat @ self.coarse_inverse.T.to(f.dtype)).reshape(f.shape)
            return self.smoothers[level](u, f, self.coarse_steps)
        u = self.smoothers[level](u, f, self.pre_smooth)
        r_coarse = self.transfer.restrict(self.residual(u, f, level))
        e = torch.zeros_like(r_coarse)
        for _ in range(self.gamma):
            e = self._cycle(e, r_coarse, level + 1)
        u = u + self.transfer.prolong(e, self.sizes[level])
        return self.smoothers[level](u, f, self.post_smooth)

    def solve(self, f: torch.Tensor, u: Optional[torch.Tensor] = None, tol: float = 1e-8,
              max_cycles: int = 50) -> Tuple[torch.Tensor, List[float]]:
        """Cycles until ‖f − A u‖ ≤ tol·‖f‖ (or ``max_cycles``); returns u and the residual norms."""
        self.check(f)
        u = torch.zeros_like(f) if u is None else u
        history = [float(self.residual(u, f).norm())]
        target = tol * float(f.norm())
        for _ in range(max_cycles):
            if history[-1] <= target:
                break
            u = self.cycle(u, f)
            history.append(float(self.residual(u, f).norm()))
        return u, history


def conjugate_gradient(op: Callable[[torch.Tensor], torch.Tensor], f: torch.Tensor, tol: float = 1e-8,
                       max_iter: int = 10000, u: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[float]]:
    """Conjugate gradients for symmetric positive definite A (whole tensor as one vector); returns u
    and the residual norms, stopping at ‖f − A u‖ ≤ tol·‖f‖."""
    u = torch.zeros_like(f) if u is None else u
    r = f - op(u)
    p = r.clone()
    rr = float((r * r).sum())
    target = tol * float(f.norm())
    history = [math.sqrt(rr)]
    for _ in range(max_iter):
        if history[-1] <= target:
            break
        ap = op(p)
        alpha = rr / float((p * ap).sum())
        u = u + alpha * p
        r = r - alpha * ap
        rr_new = float((r * r).sum())
        p = r + (rr_new / rr) * p
        rr = rr_new
        history.append(math.sqrt(rr))
    return u, history


def jacobi_solve(op: Operator, f: torch.Tensor, damping: float = 1.0, tol: float = 1e-8, max_iter: int = 100000,
                 check_every: int = 50) -> Tuple[torch.Tensor, int, float]:
    """Plain (damped) Jacobi iteration u ← u + ω D⁻¹(f − A u) to ‖f − A u‖ ≤ tol·‖f‖; returns u, the
    iterations and the final relative residual (checked every ``check_every`` steps)."""
    smoother = Smoother(op, 'jacobi', damping, list(f.shape[2:]))
    u = torch.zeros_like(f)
    target = tol * float(f.norm())
    it = 0
    rel = 1.0
    while it < max_iter:
        u = smoother(u, f, check_every)
        it += check_every
        res = float((f - op(u)).norm())
        rel = res / float(f.norm())
        if res <= target:
            break
    return u, it, rel
