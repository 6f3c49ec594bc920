"""mgsv: music grounding by short video (MGSV-EC benchmark, MaDe model, tools to ground your own videos)."""

__version__ = "0.1.0"
