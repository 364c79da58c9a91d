"""pdeblocks: numerical schemes for PDEs as neural-network blocks with provable stability."""
__version__ = '0.1.0'
