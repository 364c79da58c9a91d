"""The training contract's gap: B of the training passes against the rigorous B of eval, by gradient form.

    python benchmarks/bench_contract_gap.py [--steps 150] [--lr 0.1] [--every 25] [--calibrate-every N]

One SymmetricResidual(16, dim=2, zeros, Perona–Malik) regresses random targets with SGD (momentum 0.9)
under the training contract, with four forms of B's gradient:

* ``sigma_max`` (the default for narrow blocks, ``gradient='auto'``): Danskin's gradient of σ_max at the
  current maximiser, ω* and v re-tracked at every weight update;
* ``scale`` (the default for wide blocks): the gradient of B·‖W‖_F/‖W₀‖_F — exact along W, none across;
* ``sigma_stale``: the gradient of κ·σ(W) at the ω* and v of the last recalibration (every
  ``--calibrate-every`` updates): the form the library avoids;
* ``none``: B carries no gradient.

Every ``--every`` steps: B of a training pass, B of an eval pass (rigorous), their ratio, and the loss.
Writes ``benchmarks/results/contract_gap_every<N>.md`` and ``.json``.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import save_results  # noqa: E402

from pdeblocks.layers import SymmetricResidual  # noqa: E402
from pdeblocks.layers.certificate import Certification  # noqa: E402

FORMS = ('sigma_max', 'scale', 'sigma_stale', 'none')


def stale_sigma_gradient(cert):
    """B with the gradient of κ·σ(W) at the last recalibration's ω* and v."""
    def with_gradient(value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        s = cert._kappa * cert.sigma(weight)
        return value + (s - s.detach())
    return with_gradient


def run(form: str, steps: int, lr: float, every: int, calibrate_every: int):
    torch.manual_seed(1)
    gradient = {'sigma_max': 'sigma_max', 'scale': 'scale', 'sigma_stale': 'scale', 'none': 'none'}[form]
    blk = SymmetricResidual(16, dim=2, boundary='zeros', flux='perona_malik',
                            certification=dict(gradient=gradient, calibrate_every=calibrate_every))
    if form == 'sigma_stale':
        blk.bound.with_scale_gradient = stale_sigma_gradient(blk.bound)
    opt = torch.optim.SGD(blk.parameters(), lr=lr, momentum=0.9)
    x, y = torch.randn(8, 16, 12, 12), torch.randn(8, 16, 12, 12)
    rows = []
    for i in range(1, steps + 1):
        loss = (blk(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % every == 0:
            with torch.no_grad():
                b_train = float(blk.norm_bound())
                blk.eval()
                b_eval = float(blk.norm_bound())
                blk.train()
            rows.append(dict(step=i, b_train=b_train, b_eval=b_eval, ratio=b_eval / b_train, loss=float(loss)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--steps', type=int, default=150)
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--every', type=int, default=25)
    p.add_argument('--calibrate-every', type=int, default=Certification().calibrate_every)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = {form: run(form, args.steps, args.lr, args.every, args.calibrate_every) for form in FORMS}
    lines = [f"SymmetricResidual(16, dim=2, zeros, Perona–Malik), SGD lr {args.lr} momentum 0.9, 8×16×12×12 random "
             f"regression, training contract (calibrate_every {args.calibrate_every}: the scale and sigma_stale forms' recalibrations); B_eval / B_train = how far the training "
             f"passes' B fell below the rigorous one", '',
             '| step | ' + ' | '.join(f'{f}: B_eval/B_train, loss' for f in data) + ' |',
             '|---:|' + '---|' * len(data)]
    for k in range(len(data['scale'])):
        cells = [f"{data[f][k]['ratio']:.3f}, {data[f][k]['loss']:.3f}" for f in data]
        lines.append(f"| {data['scale'][k]['step']} | " + ' | '.join(cells) + ' |')
    text = '\n'.join(lines)
    print(text)
    save_results(f'contract_gap_every{args.calibrate_every}', text, dict(args=vars(args), runs=data), indent=1)


if __name__ == '__main__':
    main()
