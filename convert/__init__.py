"""Workstation side: PyTorch checkpoint -> bundle. torch lives here, never on the board."""
