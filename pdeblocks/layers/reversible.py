"""Reversible backpropagation for stacks of invertible steps (Ruthotto–Haber's leapfrog and Verlet blocks,
:mod:`pdeblocks.layers.hyperbolic`): a gradient strategy kept apart from the schemes that use it.

A step (a, b) ↦ (a', b') whose inverse is computable from (a', b') needs no saved activations: each
:class:`ReversibleStep` saves nothing, the backward pass rebuilds step j's inputs from its outputs (the final
states for the last step, the states rebuilt by step j + 1 otherwise) with the block's ``step_reverse``, which
also gives the vector–Jacobian products, and returns the step's parameter gradients at once, so activation
memory does not grow with depth.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ['ReversibleState', 'ReversibleStep', 'ReversibleStack', 'vector_jacobian']


class ReversibleState:
    """States shared by the step functions of one reversible forward pass.

    ``final``: the last two states (detached aliases of the stack's outputs; their version
    counters guard against in-place edits). ``current``: the states rebuilt so far in backward.
    """

    def __init__(self) -> None:
        self.final: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self.versions: Tuple[int, int] = (0, 0)
        self.current: Optional[Tuple[torch.Tensor, torch.Tensor]] = None


class ReversibleStep(torch.autograd.Function):
    """Step j of a reversible stack: (a, b) ↦ (a', b') without saving anything for backward.

    The backward of step j takes its output states from the shared :class:`ReversibleState`
    (the final states for the last step, else the states rebuilt by step j + 1), rebuilds its
    input states with ``block.step_reverse`` (one evaluation of each F, which also gives the
    vector–Jacobian products) and leaves them for step j − 1. Parameter gradients are returned per
    step, so autograd accumulates them at once: nothing grows with depth. Repeated backward passes
    (``retain_graph=True``) work, since the final states are kept; an in-place edit of the outputs
    before backward raises a RuntimeError instead of giving wrong gradients.
    """

    @staticmethod
    def forward(ctx, block, index: int, shared: ReversibleState, a: torch.Tensor, b: torch.Tensor,
                *params: torch.Tensor):
        a_out, b_out = block.step_forward(index, a, b)
        if a_out is a or a_out is b:  # leapfrog passes Y_j on unchanged; outputs must be new tensors
            a_out = a_out.view_as(a_out)
        ctx.block, ctx.index, ctx.shared = block, index, shared
        ctx.last = index == block.steps - 1
        if ctx.last:
            shared.final = (a_out.detach(), b_out.detach())
            shared.versions = (a_out._version, b_out._version)
        return a_out, b_out

    @staticmethod
    def backward(ctx, grad_a, grad_b):
        shared = ctx.shared
        if ctx.last:
            assert shared.final is not None
            if (shared.final[0]._version, shared.final[1]._version) != shared.versions:
                raise RuntimeError("the output of a reversible stack was modified in place before backward; "
                                   "its earlier states cannot be rebuilt (use reversible=False or avoid the "
                                   "in-place operation)")
            a, b = shared.final
        else:
            assert shared.current is not None
            a, b = shared.current
        ga = torch.zeros_like(a) if grad_a is None else grad_a
        gb = torch.zeros_like(b) if grad_b is None else grad_b
        a_in, b_in, ga, gb, param_grads = ctx.block.step_reverse(ctx.index, a, b, ga, gb)
        shared.current = (a_in, b_in)
        return (None, None, None, ga, gb) + tuple(param_grads)


def vector_jacobian(output: torch.Tensor, inputs: Sequence[torch.Tensor],
                    grad: torch.Tensor) -> List[Optional[torch.Tensor]]:
    """gᵀ ∂output/∂inputs for each input (None where an input does not enter)."""
    return list(torch.autograd.grad(output, list(inputs), grad, allow_unused=True))


class ReversibleStack(nn.Module):
    """Base of a reversible stack of ``steps`` steps on a pair of states (a, b): the plain (autograd, TorchScript)
    path, or when training with ``reversible`` a chain of :class:`ReversibleStep` s. A subclass implements
    ``step_forward(j, a, b)``, ``step_reverse(j, a', b', ga', gb')`` (the inverse step with its vector–Jacobian
    products) and :meth:`step_parameters`."""

    reversible: bool
    steps: int

    @torch.jit.unused
    def step_parameters(self, index: int) -> List[nn.Parameter]:
        """Trainable parameters of step ``index`` (inputs of its :class:`ReversibleStep`)."""
        raise NotImplementedError

    @torch.jit.unused
    def run_reversible(self, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        shared = ReversibleState()
        for j in range(self.steps):
            a, b = ReversibleStep.apply(self, j, shared, a, b, *self.step_parameters(j))
        return a, b

    def use_reversible(self, x: torch.Tensor) -> bool:
        return self.reversible and torch.is_grad_enabled() and not x.is_meta
