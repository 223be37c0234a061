"""fp32 ONNX -> full-integer int8 TFLite with onnx2tf, for LiteRT's XNNPACK kernels on the board.

Our ONNX graph takes uint8 and casts it; TensorFlow's calibrator feeds float32, so the converter first
writes a copy of the graph whose input is float32 raw pixels (the Cast removed) — the normalisation is
still inside. Calibrated on raw 0..255 pixels, the TFLite input is uint8 with scale 1 and zero point 0:
the camera's pixel goes in unchanged. That is checked, not assumed, as is loading and running the result.
onnx2tf reaches for the internet for a sample calibration file unless one of that name is in the working
directory, so it runs in a scratch directory where we write that file ourselves.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@dataclass(frozen=True)
class TfliteResult:
    path: Path
    input_scale: float
    input_zero_point: int
    input_dtype: str
    outputs: dict[str, int]  # {"logits": i, "features": j} in get_output_details() order
    features_layout: str
    seconds: float


def float_input_copy(onnx_fp32: Path, out: Path) -> Path:
    """The same graph with a float32 input of raw pixel values (the leading uint8 Cast removed)."""
    model = onnx.load(str(onnx_fp32))
    inp = model.graph.input[0]
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.input[0] == inp.name]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.UINT8 or len(casts) != 1:
        raise ValueError(f"{onnx_fp32}: expected a uint8 input followed by one Cast (skinedge's export contract)")
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == casts[0].output[0]:
                node.input[i] = inp.name
    model.graph.node.remove(casts[0])
    inp.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def map_outputs(details: list[dict]) -> dict[str, int]:
    """onnx2tf names outputs `PartitionedCall:N` and may reorder them: map by rank (2-D logits, 4-D features)."""
    ranks = {len(d["shape"]): i for i, d in enumerate(details)}
    if len(details) != 2 or set(ranks) != {2, 4}:
        raise ValueError(f"expected a 2-D logits and a 4-D features output, found {[list(d['shape']) for d in details]}")
    return {"logits": ranks[2], "features": ranks[4]}


def convert_tflite(onnx_fp32: Path, calib: np.ndarray, out: Path, *, workdir: Path | None = None,
                   quant_type: str = "per-channel") -> TfliteResult:
    """Write full-integer int8 TFLite (uint8 input, float32 outputs) calibrated on `calib` (N,H,W,3) uint8."""
    import onnx2tf

    from edge.backends.tflite import load_interpreter

    t0 = time.perf_counter()
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="skinedge-tflite-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    try:
        src = float_input_copy(onnx_fp32, work / "model_float_input.onnx")
        data = calib.astype(np.float32)
        # Make sure the input range the quantiser sees is exactly 0..255, so the input scale is 1, zero point 0.
        data[0, 0, 0, :] = 0.0
        data[0, 0, 1, :] = 255.0
        np.save(work / "calib.npy", data)
        np.save(work / ONNX2TF_SAMPLE, (calib[:20, ::2, ::2].astype(np.float32) / 255.0)[:, :128, :128])
        os.chdir(work)
        with contextlib.redirect_stdout(io.StringIO()) as log:
            onnx2tf.convert(
                input_onnx_file_path=str(src),
                output_folder_path=str(work / "out"),
                output_integer_quantized_tflite=True,
                quant_type=quant_type,
                custom_input_op_name_np_data_path=[["input", str(work / "calib.npy"), [[[[0.0, 0.0, 0.0]]]],
                                                    [[[[1.0, 1.0, 1.0]]]]]],
                input_quant_dtype="uint8",
                output_quant_dtype="float32",
                non_verbose=True,
            )
    except Exception as e:
        raise RuntimeError(f"{onnx_fp32}: onnx2tf failed: {e}\n{log.getvalue()[-2000:] if 'log' in locals() else ''}") from e
    finally:
        os.chdir(cwd)
    try:
        made = work / "out" / "model_float_input_full_integer_quant.tflite"
        if not made.is_file():
            raise RuntimeError(f"{onnx_fp32}: onnx2tf wrote no full-integer model ({sorted(os.listdir(work / 'out'))})")
        interp = load_interpreter(made, threads=1)  # allocate_tensors() inside: catches unrunnable variants
        inp = interp.get_input_details()[0]
        scale, zp = inp["quantization"]
        if inp["dtype"] != np.uint8 or scale != 1.0 or zp != 0:
            raise RuntimeError(f"{made}: input should be uint8 with scale 1, zero point 0; got {inp['dtype']} {scale} {zp}")
        outputs = map_outputs(interp.get_output_details())
        interp.set_tensor(inp["index"], calib[:1])
        interp.invoke()
        shutil.copyfile(made, out)
        return TfliteResult(Path(out), float(scale), int(zp), "uint8", outputs, "NHWC", time.perf_counter() - t0)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
