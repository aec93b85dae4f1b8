"""Shared test set-up: make the helpers in this folder importable from every test subfolder."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

# One thread: the tiny test models are faster single-threaded, and OpenMP spin-waiting makes
# two threads slow on a busy 2-core machine.
torch.set_num_threads(1)
