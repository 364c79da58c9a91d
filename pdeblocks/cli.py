"""Command line: ``pdeblocks certify MODEL`` and ``pdeblocks demo``."""
import argparse
import sys
from typing import List, Optional


def _certify(name: str) -> int:
    import timm
    import torch

    from . import certify  # noqa: F401  (registers the models)

    try:
        model = timm.create_model(name)
    except RuntimeError as e:  # timm: unknown model
        print(f"pdeblocks: error: {e}", file=sys.stderr)
        return 2
    model.eval()
    size = model.pretrained_cfg.get('input_size', (3, 224, 224))
    with torch.no_grad():
        out = model(torch.randn(2, *size))
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params:,} parameters, input {tuple(size)} -> output {tuple(out.shape)}")
    print(certify(model))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='pdeblocks', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('certify', help='build a registered timm model and print its stability certificate')
    p.add_argument('model', help="a timm model name, e.g. 'pde_resnet18'")
    sub.add_parser('demo', help='build pde_resnet18 and print its stability certificate')
    args = parser.parse_args(argv)
    if args.command == 'certify':
        return _certify(args.model)
    return _certify('pde_resnet18')


if __name__ == '__main__':
    sys.exit(main())
