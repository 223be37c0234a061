"""Activation ranges from calibration images, in bounded memory, with onnxruntime's own calibrators.

`quantize_static` hands its calibrator the whole data reader at once. The histogram calibrators (entropy,
percentile) keep every calibrated tensor of every image until the reader is exhausted: ~62 MB per 224 px
image for EfficientNet-Lite0, 13.9 GB for 200 images. Their `collect_data` may be called repeatedly, though:
the histograms are merged across calls (MinMax merges its ranges). So the images go in chunks sized from the
augmented model's own output shapes, `CHUNK_BYTES` of activations at a time, and the ranges are written to
onnxruntime's calibration cache, from which `quantize_static` builds the model without calibrating again.

(onnxruntime's `CalibMaxIntermediateOutputs` is no substitute: only MinMax reads it, and in onnxruntime 1.32
it discards each full chunk without merging it into the ranges.)

The histogram calibrators clip: a percentile or entropy threshold drops the rare largest values, which is what a
confident answer is made of (a logit far above the others, the features behind it). `Ranges.merged` gives chosen
tensors (the later half of the network, convert.quantize.full_range_tensors) their full observed range instead; the
histogram collectors track each tensor's minimum and maximum beside its histogram, so this costs no second pass.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data
from tqdm import tqdm

from edge.preprocess import to_layout

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# quantize_static's defaults for each calibrator, except the percentile: on ~100 images, clip the top 0.01%
# of each activation's histogram.
OPTIONS = {"minmax": {}, "entropy": {}, "percentile": {"percentile": 99.99}}
CHUNK_BYTES = 256 * 2**20  # calibrated activations held at once (plus transient copies per tensor)


class ImageReader(CalibrationDataReader):
    """Feeds preprocessed uint8 images, one at a time, in the ONNX input layout."""

    def __init__(self, input_name: str, images: np.ndarray):
        self._it: Iterator[np.ndarray] = iter(images)
        self._name = input_name

    def get_next(self):
        img = next(self._it, None)
        return None if img is None else {self._name: to_layout(img, "NCHW")}


def bytes_per_image(session) -> int:
    """Bytes of every output of the (augmented) calibration session for one image."""
    total = 0
    for out in session.get_outputs():
        n = int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in out.shape]))
        total += n * (2 if "float16" in out.type else 4)
    return total


@dataclass
class Ranges:
    """What one calibration pass gives: the method's ranges, and every tensor's observed min and max (for minmax
    both are the same), so a min-max model, or min-max for chosen tensors, costs no second pass."""

    method: TensorsData
    observed: TensorsData

    def as_minmax(self) -> Ranges:
        """What minmax calibration of the same images gives, from this pass: no pass of its own."""
        return Ranges(self.observed, self.observed)

    def merged(self, minmax_for: Collection[str] = ()) -> TensorsData:
        """The method's ranges, with the tensors in `minmax_for` at their observed min-max."""
        data = dict(self.method.data)
        for name in set(minmax_for) & set(data):
            data[name] = self.observed[name]
        return TensorsData(self.method.calibration_method, data)


def calibrate_pass(model: Path, images: np.ndarray, method: str, op_types: list[str], *, progress: bool = False,
                   chunk_bytes: int = CHUNK_BYTES) -> Ranges:
    """Ranges of the inputs/outputs of `op_types` nodes in `model` over `images` ((N,H,W,3) uint8 through
    edge.preprocess), holding at most ~chunk_bytes of activations at a time."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: expected one of {sorted(METHODS)} or 'auto'")
    if len(images) == 0:
        raise ValueError("no calibration images")
    input_name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="skinedge-calib-") as tmp:
        calibrator = create_calibrator(Path(model), op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=METHODS[method], extra_options=OPTIONS[method])
        chunk = max(1, chunk_bytes // max(1, bytes_per_image(calibrator.infer_session)))
        starts = range(0, len(images), chunk)
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram collector prints at every step
            for start in tqdm(starts, desc=f"calibrate ({method}, {chunk} images a step)", disable=not progress,
                              leave=False, file=sys.stderr):
                calibrator.collect_data(ImageReader(input_name, images[start:start + chunk]))
            ranges = calibrator.compute_data()
        observed = ranges
        if method != "minmax":  # the histogram collectors keep (hist, edges, min, max[, threshold]) per tensor
            observed = TensorsData(METHODS["minmax"], {
                name: TensorData(lowest=np.asarray(h[2], np.float32), highest=np.asarray(h[3], np.float32))
                for name, h in calibrator.collector.get_histogram_dict().items() if name in ranges})
        del calibrator
    return Ranges(ranges, observed)


def write_cache(ranges: TensorsData, path: Path) -> Path:
    """onnxruntime's calibration cache (JSON), which quantize_static reads instead of calibrating."""
    save_tensors_data(ranges, path)
    return Path(path)
