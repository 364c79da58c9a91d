"""Registered timm architectures (registered on ``import pdeblocks``) and 1D models."""
# importing registers: pde_gcnn*, pde_fsi_*, pde_implicit_*, pde_*_cnn with timm, the pretrained 1D
# architectures (denoise1d, multigrid1d, blind) with pdeblocks.hub
from . import blind, denoise1d, multigrid1d, pde_gcnn, pde_schemes, ruthotto_haber  # noqa: F401
from .multigrid_unet import multigrid_unet_1d, multigrid_unet_2d
from .pde_gcnn import PDEGCNN
from .pde_resnet import Connector, PDEResNet, PDEStage
from .ruthotto_haber import RuthottoHaberNet
from .symmetric_resnet1d import SymmetricResNet1d, create_model_1d, list_models_1d

__all__ = ['Connector', 'PDEGCNN', 'PDEResNet', 'PDEStage', 'RuthottoHaberNet', 'SymmetricResNet1d', 'create_model_1d',
           'list_models_1d', 'multigrid_unet_1d', 'multigrid_unet_2d']
