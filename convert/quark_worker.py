"""Run by AMD Quark's own Python (convert.adaround), never imported by skinedge: Quark 0.13 pins onnx <= 1.22, so it
lives in a separate environment. `python quark_worker.py FP32 OUT CALIB.npy ITERATIONS adaround|adaquant` writes
Quark's per-channel U8S8 QDQ model of FP32 with the rounding optimised on CALIB ((N,3,H,W) uint8, the graph's
input); only its rounded weights are used afterwards. Needs numpy, onnxruntime, torch and amd-quark only.
"""

from __future__ import annotations

import sys
from importlib.metadata import version

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
from quark.onnx import ModelQuantizer
from quark.onnx.quantization.config.config import Config
from quark.onnx.quantization.config.custom_config import DEFAULT_ADAQUANT_PARAMS, DEFAULT_ADAROUND_PARAMS
from quark.onnx.quantization.config.legacy import QuantizationConfig


class Reader(CalibrationDataReader):
    def __init__(self, name: str, images: np.ndarray):
        self.name, self.images = name, images
        self.rewind()

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {self.name: np.ascontiguousarray(x[None])}

    def rewind(self):
        self.it = iter(self.images)


def main(fp32: str, out: str, calib: str, iterations: str, algorithm: str) -> None:
    print(f"amd-quark {version('amd-quark')}", flush=True)  # first line: convert.adaround records it
    images = np.load(calib)
    params = {"adaround": DEFAULT_ADAROUND_PARAMS, "adaquant": DEFAULT_ADAQUANT_PARAMS}[algorithm]
    # The same grid as convert.quantize: symmetric per-channel int8 weights (scale max|w|/127), uint8 activations.
    config = QuantizationConfig(
        calibrate_method=CalibrationMethod.MinMax, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, per_channel=True, include_cle=False, include_fast_ft=True,
        extra_options={"ForceQuantizeNoInputCheck": True, "WeightSymmetric": True, "ActivationSymmetric": False,
                       "FastFinetune": dict(params, NumIterations=int(iterations), DataSize=len(images))})
    name = onnx.load(fp32, load_external_data=False).graph.input[0].name
    ModelQuantizer(Config(global_quant_config=config)).quantize_model(fp32, out, Reader(name, images))


if __name__ == "__main__":
    main(*sys.argv[1:6])
