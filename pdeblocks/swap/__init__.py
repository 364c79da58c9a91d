"""Swap pdeblocks' residual PDE blocks into models written by other people.

``swap_blocks(model, 'symmetric')`` walks a model, finds the residual blocks it has a *rule* for
(timm and torchvision ResNet ``BasicBlock``/``Bottleneck``, segmentation_models_pytorch U-net decoder
blocks, MONAI ``ResidualUnit``, diffusers ``ResnetBlock2D``/``ResConvBlock``/``ResidualTemporalBlock1D``)
and replaces each by

    x ↦ post( step( connector(x) + shift(temb) ) ) / output_scale,

where ``connector`` is the block's own shortcut / downsample path (identity when it had none), so
resolution and channel changes happen exactly as before, and ``step`` is a registered residual PDE
block (:mod:`pdeblocks.layers.registry`) at constant width, e.g. u − τ Kᵀ Φ(K u). ``shift`` is the
block's time-embedding projection for diffusion U-nets (a per-channel source term), ``post`` the
activation the original applied after its residual sum (ReLU in ResNets), ``output_scale`` diffusers'
``output_scale_factor``. At a stage entry a ResNet ``BasicBlock`` runs the step first, at the input width and
resolution, x ↦ post(connector(step(x))): its strided 1×1 downsample reads one pixel in four and
would hide the rest of the input from a step placed after it. The stability certificate of the step
(``<path>.step``) covers the map u ↦ step(u); ``post`` = ReLU is 1-Lipschitz with ‖ReLU(u)‖ ≤ ‖u‖, so
it keeps both guarantees.

Initialisation (``init='auto'``): K is taken from the replaced block's first convolution W₁ when its
shape fits (``[H, C, k..]`` at the step's width, taken at stride 1), with the following BatchNorm's
scale γ/√(σ²+ε) folded in, i.e. K u equals the original's pre-activation W₁'u up to the dropped bias.
Where W₁ does not fit (U-net and diffusion blocks whose first convolution changes the width) K is the
adjoint kernel of the last convolution W₂' (taps flipped, channels swapped), so that Kᵀ = W₂' is the
branch's output map. For a timm/torchvision ``Bottleneck`` K is the composite 3×3 map conv2∘bn1∘conv1
restricted to its H strongest output channels. The step keeps the block's default start (half the
stable limit). Where no shape fits, or the convolution is zero (a zero-initialised last BatchNorm),
K is random (``init='random'`` always is); the report says which for every block.

Such a K does not make the step reproduce the replaced block (u − τKᵀΦ(Ku) has no second weight and
no bias): in a pretrained resnet18 swapped whole, the logits lose the pretrained function. The
optional ``calibration=`` data of :func:`swap_blocks` fits each new step to the replaced block's output
(block-wise feature distillation, no labels, see :func:`calibrate_swaps`).

Rules are small functions ``rule(module, spec) -> nn.Module`` (or ``(module, init_note)``) registered
per class with :func:`register_swap`; class names are stored as strings, so optional packages are never imported
here. A rule raises :class:`CannotSwap` to decline (the report lists the reason).

Modules (each imports only those above it):

- :mod:`.spec`: :class:`SwapSpec`, what the user asked for; ``spec.make_step`` builds a rule's PDE step.
- :mod:`.registry`: :func:`register_swap`, :data:`SWAP_RULES`, :func:`rule_for`, :class:`CannotSwap`.
- :mod:`.report`: :class:`SwapReport` and its records.
- :mod:`.wrappers`: :class:`SwappedResidual`, :class:`SwappedUnetDecoderBlock`, the modules put in place.
- :mod:`.kernels`: the initial K from the replaced convolutions (BatchNorm folded, adjoints, composites).
- :mod:`.rules`: the built-in rules, one module per package family, and their class table.
- :mod:`.calibrate`: block-wise distillation (:func:`calibrate_swaps`).
- :mod:`.walk`: :func:`swap_blocks`, the walker.
"""
from . import rules  # noqa: F401  (registers the built-in rules)
from .calibrate import calibrate_swaps
from .registry import SWAP_RULES, CannotSwap, register_swap, rule_for
from .report import CalibrationRecord, SkipRecord, SwapRecord, SwapReport
from .spec import SwapSpec
from .walk import load_block_modules, swap_blocks
from .wrappers import SwappedResidual, SwappedUnetDecoderBlock

__all__ = ['swap_blocks', 'register_swap', 'SWAP_RULES', 'SwapReport', 'SwapRecord', 'SkipRecord',
           'CalibrationRecord', 'SwapSpec', 'CannotSwap', 'SwappedResidual', 'SwappedUnetDecoderBlock',
           'calibrate_swaps', 'load_block_modules', 'rule_for']
