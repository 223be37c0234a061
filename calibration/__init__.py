"""Image sets for calibration and validation (workstation side): class trees and flat unlabelled folders,
photographs shipped in packages, and synthetic lesions.

Imports numpy, OpenCV, Pillow and `edge.preprocess` (the board's own preprocessing); never torch.
"""
