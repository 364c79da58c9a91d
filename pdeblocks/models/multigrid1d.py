"""``denoiser-1d-multigrid``: the multigrid U-net of :mod:`pdeblocks.layers.multigrid` as a 1D denoiser."""
import torch

from ..layers.multigrid import MultigridUNet
from .denoise1d import Pretrained1D


class MultigridDenoiser1D(Pretrained1D, tags=['denoising', 'multigrid', 'u-net', 'nonlinear-diffusion']):
    """f ↦ f − U(f), U a :class:`~pdeblocks.layers.multigrid.MultigridUNet` (1D, V/W-cycle of
    symmetric steps with learned nonmonotone fluxes on ``levels`` grids of widths channels·2^l).

    Minimum length: (m − 1)·2^(levels−1) + 1 with m = the coarsest-grid minimum of the U-net
    (max(2, kernel_size) for Neumann boundaries). ``interp_slack``: the norm bound's grid setting, as in
    :class:`~pdeblocks.models.denoise1d.Denoiser1D`.
    """

    architecture = 'multigrid_denoiser_1d'

    def __init__(self, channels: int = 16, levels: int = 4, kernel_size: int = 5, pre_smooth: int = 2,
                 post_smooth: int = 2, coarse_steps: int = 2, cycle: str = 'V', flux: str = 'learned',
                 interp_slack: float = 1.1):
        super().__init__()
        self.unet = MultigridUNet(dim=1, in_channels=1, out_channels=1, channels=channels, levels=levels, cycle=cycle,
                                  pre_smooth=pre_smooth, post_smooth=post_smooth, coarse_steps=coarse_steps,
                                  kernel_size=kernel_size, flux=flux, boundary='neumann', stability='euclidean',
                                  interp_slack=interp_slack)
        with torch.no_grad():
            self.unet.head.zero_()  # start as the identity f ↦ f

    @property
    def min_length(self) -> int:
        return (self.unet.min_coarse - 1) * 2 ** (self.unet.levels - 1) + 1

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        self.check_input(f)
        return f - self.unet(f)
