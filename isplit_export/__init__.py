"""isplit-export: I-Split split-point ranking and verified head/tail export for edge split computing."""

__version__ = "0.1.0"
