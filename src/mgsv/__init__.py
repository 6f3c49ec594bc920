"""mgsv: music grounding by short video (MGSV-EC benchmark, MaDe model, tools to ground your own videos)."""

import os

__version__ = "0.1.0"

# oneDNN (torch's CPU matmul backend) caches one compiled kernel per distinct matrix shape, 1,024 by default.
# Packed token sequences give almost every batch new shapes, so that cache grew a full-size evaluation by ~4.5 GB
# (2,000 x 2,000 with top-100 detection: peak RSS 6.8 GB) without saving any time. oneDNN reads the variable when it
# builds its first kernel, so setting it here (before any model runs) applies to the whole process; an explicit
# setting in the environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
