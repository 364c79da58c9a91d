"""torch.hub entrypoints: ``torch.hub.load('<checkout or owner/repo>', 'pde_resnet18', source=...)``.

Each entrypoint builds a registered pdeblocks model; keyword arguments go to the model's constructor.
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']

import timm as _timm  # noqa: E402

import pdeblocks as _pdeblocks  # noqa: E402,F401  (registers the pde_* architectures with timm)
from pdeblocks.hub import denoiser_1d, denoiser_1d_multigrid, diffusion_1d  # noqa: E402,F401
from pdeblocks.models.multigrid_unet import multigrid_unet_1d, multigrid_unet_2d  # noqa: E402,F401


def _create(name: str, pretrained: bool, **kwargs):
    return _timm.create_model(name, pretrained=pretrained, **kwargs)


def pde_resnet(pretrained: bool = False, **kwargs):
    """PDE-ResNet with resnet18's layout: symmetric blocks u − τKᵀΦ(Ku), Euclidean-stable."""
    return _create('pde_resnet', pretrained, **kwargs)


def pde_resnet18(pretrained: bool = False, **kwargs):
    """PDE-ResNet-18: widths (64, 128, 256, 512), 2 symmetric blocks per stage."""
    return _create('pde_resnet18', pretrained, **kwargs)


def pde_resnet34(pretrained: bool = False, **kwargs):
    """PDE-ResNet-34: widths (64, 128, 256, 512), (3, 4, 6, 3) symmetric blocks."""
    return _create('pde_resnet34', pretrained, **kwargs)


def pde_resnet_tiny(pretrained: bool = False, **kwargs):
    """A tiny PDE-ResNet (widths 16–64, one block per stage) for quick experiments and tests."""
    return _create('pde_resnet_tiny', pretrained, **kwargs)


def pde_fsi_resnet(pretrained: bool = False, **kwargs):
    """PDE-ResNet of fast semi-iterative (FSI) blocks: explicit steps with an extra skip from two steps back."""
    return _create('pde_fsi_resnet', pretrained, **kwargs)


def pde_fsi_resnet_tiny(pretrained: bool = False, **kwargs):
    """A tiny FSI PDE-ResNet for quick experiments."""
    return _create('pde_fsi_resnet_tiny', pretrained, **kwargs)


def pde_implicit_resnet(pretrained: bool = False, **kwargs):
    """PDE-ResNet of implicit steps solved by a recurrent fixed-point iteration (stable for every τ)."""
    return _create('pde_implicit_resnet', pretrained, **kwargs)


def pde_implicit_resnet_tiny(pretrained: bool = False, **kwargs):
    """A tiny implicit PDE-ResNet for quick experiments."""
    return _create('pde_implicit_resnet_tiny', pretrained, **kwargs)


def pde_parabolic_cnn(pretrained: bool = False, **kwargs):
    """Ruthotto & Haber parabolic CNN, CIFAR-10 layout (widths 32, 64, 112, 112; 3 units × 3 steps)."""
    return _create('pde_parabolic_cnn', pretrained, **kwargs)


def pde_hyperbolic_cnn(pretrained: bool = False, **kwargs):
    """Ruthotto & Haber second-order (leapfrog) CNN with reversible backprop, CIFAR-10 layout."""
    return _create('pde_hyperbolic_cnn', pretrained, **kwargs)


def pde_hamiltonian_cnn(pretrained: bool = False, **kwargs):
    """Ruthotto & Haber Hamiltonian (Verlet) CNN with reversible backprop, CIFAR-10 layout."""
    return _create('pde_hamiltonian_cnn', pretrained, **kwargs)


def pde_gcnn(pretrained: bool = False, **kwargs):
    """PDE-G-CNN (Smets et al.): lift to roto-translations, convection–dilation–erosion layers, project; exactly equivariant to 90° rotations."""
    return _create('pde_gcnn', pretrained, **kwargs)


def pde_gcnn_small(pretrained: bool = False, **kwargs):
    """A small PDE-G-CNN (762 parameters)."""
    return _create('pde_gcnn_small', pretrained, **kwargs)
