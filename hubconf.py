"""torch.hub entrypoints: ``torch.hub.load('<checkout or owner/repo>', 'pde_resnet18', source=...)``.

Generated from pdeblocks' registries by :func:`pdeblocks.models.entrypoints.hub_entrypoints`: every
registered timm model ``pde_*`` (and its deprecated names), the pretrained 1D models
(``denoiser_1d``: the general blind denoiser; ``denoiser_1d_piecewise_constant``, ``diffusion_1d``,
``denoiser_1d_multigrid``) and the multigrid U-nets
(``multigrid_unet_1d``, ``multigrid_unet_2d``). Keyword arguments go to the model's constructor;
``torch.hub.list`` lists the names and ``torch.hub.help`` prints each one's docstring.
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']

from pdeblocks.models.entrypoints import hub_entrypoints as _hub_entrypoints  # noqa: E402

globals().update(_hub_entrypoints())
