"""The README's promises that code can check: its extension example and its import-graph claim.

The extension example (a Heun / SSP-RK2 scheme block, ``HeunResidual``) is executed from README.md itself,
so the README cannot drift from what is tested. Heun's method in Shu–Osher form,

    f(u) = ½u + ½S(S(u)),   S(u) = u − τKᵀΦ(Ku),

is a convex combination of u and two explicit steps; ‖S(v)‖ ≤ ‖v‖ for every v (the Euclidean-stability
theorem of the symmetric step, τ ≤ 2/(L‖K‖²)) gives ‖f(u)‖ ≤ ½‖u‖ + ½‖u‖ = ‖u‖.
"""
import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest
import torch

import pdeblocks
from pdeblocks.layers import SymmetricResidual
from pdeblocks.layers.registry import RESIDUAL_BLOCKS, create_block

ROOT = Path(__file__).resolve().parents[1]


def readme_block(marker: str) -> str:
    """The README's ```python block that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / 'README.md').read_text(encoding='utf-8'), re.S)
    found = [b for b in blocks if marker in b]
    if len(found) != 1:
        raise ValueError(f"expected one python block containing {marker!r} in README.md, found {len(found)}")
    return found[0]


@pytest.fixture(scope='module')
def heun():
    """Run the README's extension example (it registers 'heun'); unregister it afterwards so that tests
    iterating over every registered block see the library's own blocks only."""
    namespace: Dict[str, object] = {'__name__': 'readme_example'}
    assert 'heun' not in RESIDUAL_BLOCKS
    torch.manual_seed(0)
    exec(compile(readme_block("register_block('heun'"), 'README.md', 'exec'), namespace)
    try:
        yield namespace['HeunResidual']
    finally:
        RESIDUAL_BLOCKS.pop('heun', None)


def norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def test_example_registers_constructs_runs_and_certifies(heun):
    block = create_block('heun', 8, dim=2, boundary='zeros').eval()
    assert type(block) is heun and issubclass(heun, SymmetricResidual)
    u = torch.randn(3, 8, 12, 12)
    assert block(u).shape == u.shape
    report = pdeblocks.certify(block, verify=True)
    (cert,) = report.blocks
    assert (cert.block, cert.mode, cert.norm_factor, cert.guarantee, cert.passes) == \
        ('HeunResidual', 'heun-euclidean', 1.0, '‖f(u)‖ ≤ ‖u‖', 'eval')
    assert report.verified is True
    assert cert.norm_bound > 0 and 0 < cert.step_size <= 2.0 / (cert.sector_bound * cert.norm_bound ** 2)


def test_example_is_heuns_method(heun):
    """Against Heun's Butcher form u + τ/2·(F(u) + F(u + τF(u))), F(u) = −DᵀΦ(Du), written here independently:
    D the forward difference (Neumann), Φ = ReLU."""
    d = torch.tensor([[[-1.0, 1.0]]], dtype=torch.float64)
    block = create_block('heun', 1, dim=1, kernel_size=2, boundary='neumann', flux='relu', weight=d,
                         dtype=torch.float64).eval()
    block.set_step_fraction(0.9)
    u = torch.randn(5, 1, 64, dtype=torch.float64)
    tau = float(block.step_size().detach())

    def rhs(v: torch.Tensor) -> torch.Tensor:
        p = torch.relu(v[..., 1:] - v[..., :-1])
        z = p.new_zeros(p.shape[:-1] + (1,))
        return -(torch.cat([z, p], -1) - torch.cat([p, z], -1))

    expected = u + 0.5 * tau * (rhs(u) + rhs(u + tau * rhs(u)))
    torch.testing.assert_close(block(u), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('dim,boundary,flux', [(1, 'neumann', 'perona_malik'), (1, 'circular', 'learned'),
                                               (2, 'zeros', 'perona_malik'), (2, 'reflect', 'charbonnier')])
def test_example_is_nonexpansive_for_huge_weights(heun, dim, boundary, flux):
    """Eval mode (the certified passes), weights scaled by 1e3, τ at 0.999 of the certified limit, inputs over
    five decades: ‖f(u)‖ ≤ ‖u‖ up to float32 rounding."""
    gen = torch.Generator().manual_seed(dim)
    block = create_block('heun', 6, dim=dim, boundary=boundary, flux=flux).eval()
    with torch.no_grad():
        block.weight.mul_(1e3)
    block.set_step_fraction(0.999)
    shape = (16, 6) + (24,) * dim
    for scale in (1e-3, 1.0, 1e2):
        u = scale * torch.randn(shape, generator=gen)
        assert (norms(block(u)) <= norms(u) * (1 + 1e-5)).all()


def test_huge_weights_do_expand_without_the_certificate(heun):
    """The check above can fail: the same scheme with a free step (stability='none') and the same weights grows."""
    torch.manual_seed(1)
    block = create_block('heun', 6, dim=1, boundary='neumann', flux='charbonnier', stability='none').eval()
    with torch.no_grad():
        block.weight.mul_(1e3)
    u = torch.randn(16, 6, 24)
    assert (norms(block(u)) > 10 * norms(u)).any()
    cert = block.stability_certificate()
    assert cert.norm_factor is None and cert.passes == 'none' and cert.guarantee == 'none'


# ---- the README's architecture claim: no cycle in the import graph ----

def own_imports(package: Path) -> Dict[str, Set[str]]:
    """Module → the package modules it imports at module level (``from . import x`` counts as ``pkg.x``)."""
    modules: Dict[str, Path] = {}
    for path in package.rglob('*.py'):
        parts = path.relative_to(package.parent).with_suffix('').parts
        modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        here = name.split('.') if path.name == '__init__.py' else name.split('.')[:-1]
        edges: Set[str] = set()
        for node in ast.parse(path.read_text(encoding='utf-8')).body:
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = '.'.join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or '')
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                edges.update(subs if len(subs) == len(node.names) else subs + [base])
        graph[name] = {m for m in edges if m in modules and m != name}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of ``graph`` as a path [a, …, a], or [] if it has none (depth-first search)."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_find_cycle_finds_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) == []


def test_import_graph_is_acyclic():
    graph = own_imports(ROOT / 'pdeblocks')
    assert len(graph) > 40 and 'pdeblocks.layers.symmetric' in graph['pdeblocks.layers']
    assert find_cycle(graph) == []
