"""Step-size and extrapolation schedules of the accelerated explicit schemes."""
import math
from typing import List


def fed_step_sizes(n: int, tau_max: float) -> List[float]:
    """Fast explicit diffusion (Grewenig, Weickert, Bruhn): τ_i = τ_max / (2 cos²(π(2i+1)/(4n+2))).

    i = 0…n−1; the cycle reaches the stopping time Σ τ_i = τ_max (n² + n)/3. Single steps exceed
    the stability limit τ_max; the cycle as a whole is stable for a fixed linear operator.
    """
    if n < 1:
        raise ValueError(f"FED cycle length n must be ≥ 1, got {n}")
    if tau_max <= 0:
        raise ValueError(f"tau_max must be > 0, got {tau_max}")
    return [tau_max / (2.0 * math.cos(math.pi * (2 * i + 1) / (4 * n + 2)) ** 2) for i in range(n)]


def fed_cycle_time(n: int, tau_max: float) -> float:
    """Stopping time of one FED cycle, τ_max (n² + n)/3."""
    return tau_max * (n * n + n) / 3.0


def fed_tau_max(time: float, n: int, cycles: int = 1) -> float:
    """The τ_max with which ``cycles`` FED cycles of ``n`` steps stop exactly at T: τ_max = 3T / (M (n² + n)).

    The inverse of :func:`fed_cycle_time`: M · fed_cycle_time(n, τ_max) = T.
    """
    if n < 1 or cycles < 1:
        raise ValueError(f"FED cycle length n and cycle count M must be ≥ 1, got n={n}, M={cycles}")
    if not time > 0:
        raise ValueError(f"stopping time T must be > 0, got {time}")
    return 3.0 * time / (cycles * (n * n + n))


def fed_cycle_length(time: float, tau_limit: float, cycles: int = 1) -> int:
    """A cycle length n whose τ_max stays within the stability limit: n = ⌈√(3T / (M τ_limit))⌉.

    n² ≥ 3T/(M τ_limit), hence n² + n > 3T/(M τ_limit) and :func:`fed_tau_max` (T, n, M) < τ_limit
    (at most one step more than the smallest such n).
    """
    if not (time > 0 and tau_limit > 0) or cycles < 1:
        raise ValueError(f"need T > 0, τ_limit > 0 and M ≥ 1, got T={time}, τ_limit={tau_limit}, M={cycles}")
    return max(1, math.ceil(math.sqrt(3.0 * time / (cycles * tau_limit))))


def fsi_weights(n: int) -> List[float]:
    """Fast semi-iterative extrapolation weights α_k = (4k + 2)/(2k + 3), k = 0…n−1."""
    if n < 1:
        raise ValueError(f"number of FSI steps must be ≥ 1, got {n}")
    return [(4 * k + 2) / (2 * k + 3) for k in range(n)]
