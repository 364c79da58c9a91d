"""Swap rules by class: :func:`register_swap`, the table :data:`SWAP_RULES` and :func:`rule_for`.

A rule is a small function ``rule(module, spec) -> nn.Module`` (or ``(module, init_note)``) registered
per class. Class names are stored as strings (``'package.module.QualName'``), so optional packages are
never imported to register their rules. A rule raises :class:`CannotSwap` to decline (the report
lists the reason).
"""
from typing import Callable, Dict, Optional, Tuple, Union

from torch import nn

from .spec import SwapSpec

Rule = Callable[[nn.Module, SwapSpec], Union[nn.Module, Tuple[nn.Module, str]]]
SWAP_RULES: Dict[str, Rule] = {}


class CannotSwap(Exception):
    """Raised by a rule that declines a module; the message is reported as the reason."""


def class_key(cls: type) -> str:
    """``'package.module.QualName'`` of a class: the key rules are registered under."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_swap(block_class: Union[type, str], rule: Rule) -> Rule:
    """Register ``rule(module, spec) -> nn.Module`` for modules whose class is exactly ``block_class``.

    ``block_class`` is a class or its dotted name (``'timm.models.resnet.BasicBlock'``), the latter
    so that rules for optional packages need no import. Subclasses are not matched (their forward may
    differ); register them explicitly. Registering again for the same class replaces the rule.
    """
    if isinstance(block_class, type):
        key = class_key(block_class)
    elif isinstance(block_class, str) and '.' in block_class:
        key = block_class
    else:
        raise ValueError(f"block_class must be a class or a dotted class name 'package.module.Class', "
                         f"got {block_class!r}")
    if not callable(rule):
        raise ValueError(f"rule must be callable as rule(module, spec) -> nn.Module, got {rule!r}")
    SWAP_RULES[key] = rule
    return rule


def rule_for(module: nn.Module) -> Optional[Rule]:
    """The rule registered for exactly ``type(module)`` (subclasses are not matched), or None."""
    return SWAP_RULES.get(class_key(type(module)))
