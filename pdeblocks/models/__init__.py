"""Registered timm architectures (registered on ``import pdeblocks``) and 1D models."""
from .pde_resnet import Connector, PDEResNet, PDEStage

__all__ = ['Connector', 'PDEResNet', 'PDEStage']
