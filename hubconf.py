"""torch.hub entrypoints: ``torch.hub.load('<checkout or owner/repo>', 'pde_resnet18', source=...)``.

Each entrypoint builds a registered pdeblocks model; keyword arguments go to the model's constructor.
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']

import timm as _timm  # noqa: E402

import pdeblocks as _pdeblocks  # noqa: E402,F401  (registers the pde_* architectures with timm)


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
