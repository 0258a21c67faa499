"""foundry's version, in a module of its own: a module that records it (a manifest, the
report, the server's /health) imports this, not the `foundry` facade, whose functions
import the pipeline and so would close an import cycle through every stage."""

__version__ = "0.1.0"
