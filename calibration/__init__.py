"""Image sets for calibration and validation (workstation side): ImageFolder loading and synthetic lesions.

Imports numpy, OpenCV, Pillow and `edge.preprocess` (the board's own preprocessing); never torch.
"""
