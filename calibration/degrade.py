"""The bad captures the quality gates must catch, made from good images: defocus, a dark room, glare.

Blurred is a Gaussian of sigma 3 pixels at the model's input size; darkened scales every pixel by 0.2
(about -2.3 EV); over-exposed by 4 (+2 EV), clipping at 255 as a sensor does.
"""

from __future__ import annotations

import cv2
import numpy as np

BLUR_SIGMA, DARK_GAIN, BRIGHT_GAIN = 3.0, 0.2, 4.0


def blurred(img: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def gained(img: np.ndarray, gain: float) -> np.ndarray:
    """Pixels times `gain`, rounded and clipped to 0..255."""
    return cv2.convertScaleAbs(img, alpha=gain)


DEGRADATIONS = {
    f"blurred (sigma {BLUR_SIGMA:g})": blurred,
    f"darkened (x{DARK_GAIN:g})": lambda img: gained(img, DARK_GAIN),
    f"over-exposed (x{BRIGHT_GAIN:g})": lambda img: gained(img, BRIGHT_GAIN),
}
