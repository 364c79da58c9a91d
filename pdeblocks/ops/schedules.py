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


def fsi_weights(n: int) -> List[float]:
    """Fast semi-iterative extrapolation weights α_k = (4k + 2)/(2k + 3), k = 0…n−1."""
    if n < 1:
        raise ValueError(f"number of FSI steps must be ≥ 1, got {n}")
    return [(4 * k + 2) / (2 * k + 3) for k in range(n)]
