"""fp32 ONNX -> int8 TFLite (float logits), for LiteRT's XNNPACK kernels on the board.

onnx2tf translates the graph to a TensorFlow SavedModel; TensorFlow's TFLiteConverter then calibrates it once
and quantises it with the settings of onnx2tf's own `*_full_integer_quant.tflite` (per-channel int8 weights, int8
activations), except that FULLY_CONNECTED (the classifier's last layer) stays float so the logits never saturate
(`_full_integer`; `check_integer` refuses any other op left float). Asking onnx2tf for its integer models instead
calibrates four variants (int8, full int8, and two int16-activation ones) and took 3x as long (57 s vs 19 s,
MobileNetV2 at 224).

- Our ONNX takes uint8 and casts it to float. onnx2tf's integer path feeds the calibrator float32 and fails
  on a uint8 input ("Got value of type FLOAT32 but expected type UINT8"), so the converter works on a copy
  whose input is float32 raw pixels (the Cast removed; the normalisation is still inside). Calibrated on
  0..255 pixels — with a black and a white pixel put in, so the range is exactly that — the TFLite input is
  uint8 with scale 1 and zero point 0: the camera's pixel goes in unchanged. That is checked, not assumed,
  as is loading and running the result in LiteRT.
- The normalisation pixel*s + b becomes pixel + b/s with s folded into the first convolutions' weights
  (`_fold_input_scale`): TFLite quantises every op's output, and pixel*s on its own 8-bit grid cost up to 4.5
  points of agreement. With per-channel mean/std the stem's AdaRound integers (`--adaround`) are re-rounded to
  nearest by this scaling; with one scale for all channels (EfficientNet-Lite, Inception) they are kept.
- A padded MaxPool gets its padding as an explicit Pad first (see `_explicit_maxpool_pads`): onnx2tf pads
  with -3.4e38, which int8 calibration cannot survive. Every tensor's scale is checked after conversion.
- onnx2tf fetches a sample calibration file from GitHub unless one of that name is in the working directory,
  and rewrites the ONNX file it is given: it runs in a scratch directory, on a copy, with our own sample file.
- onnx2tf and TensorFlow print from Python and C++: both go to `convert.log` in the work directory.
- onnx2tf's own float32 .tflite (float32 raw-pixel input) is kept too when asked for (`fp32_out`): the
  float baseline that `skinedge bench --precision fp32` runs on LiteRT, at no extra conversion cost;
  `convert_float_tflite` makes that one alone.
- triton (torch's compiler, pulled in by torch._dynamo and so by every torchvision model import) crashes the
  process when it is loaded after TensorFlow (TensorFlow 2.21, triton 3.8: `import tensorflow; import triton`
  segfaults). So this module, the one that imports TensorFlow, loads triton first where it is installed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import onnx

from convert.onnx_graph import readers as graph_readers
from convert.runlog import log_path

with contextlib.suppress(ImportError):
    import triton  # noqa: F401  (before TensorFlow: see above)

T = TypeVar("T")
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
QUANT_TYPES = ("per-channel", "per-tensor")
LOG = "convert.log"
MAX_SCALE = 1e6  # per int8 step; real activations stay orders of magnitude below
FLOAT_OPS = ("FULLY_CONNECTED",)  # kept float in the int8 model: the classifier's last layer (`_full_integer`)


@dataclass(frozen=True)
class TfliteResult:
    path: Path
    input_scale: float
    input_zero_point: int
    input_dtype: str
    outputs: dict[str, int]  # {"logits": i, "features": j} in get_output_details() order
    features_layout: str  # "NHWC": the features tensor is [1, h, w, C]
    seconds: float
    fp32_path: Path | None = None  # the float32 model, when asked for
    fp32_outputs: dict[str, int] | None = None  # its own mapping: onnx2tf may order its outputs differently
    note: str = ""  # edge.backends.tflite.XNNPACK_NOTE if XNNPACK refused the int8 model


def _remove_input_cast(model: onnx.ModelProto, path: Path) -> None:
    """Make the input float32 raw pixels: drop the Cast that follows the uint8 input."""
    inp = model.graph.input[0]
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.input[0] == inp.name]
    if len(model.graph.input) != 1 or inp.type.tensor_type.elem_type != onnx.TensorProto.UINT8 or len(casts) != 1:
        raise ValueError(f"{path}: expected one uint8 input followed by one Cast (skinedge's export contract)")
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == casts[0].output[0]:
                node.input[i] = inp.name
    model.graph.node.remove(casts[0])
    inp.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def _explicit_maxpool_pads(model: onnx.ModelProto) -> int:
    """Move each padded MaxPool's padding into a Pad node that int8 survives; returns how many were moved.

    onnx2tf pads a MaxPool with float32's minimum (or, only when it makes the integer models itself, with 0).
    The calibrator then sees -3.4e38 and gives the tensor a scale of ~1e36: XNNPACK refuses the model ("failed
    to prepare") and other kernels compute garbage. Zero padding is exact after a Relu (torchvision's ResNet
    stem); elsewhere edge padding is, since every window then holds the border value it copies (pads < kernel).
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    moved = 0
    for node in list(model.graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        pads, kernel = list(attrs.get("pads", [])), list(attrs.get("kernel_shape", []))
        if node.op_type != "MaxPool" or not any(pads) or attrs.get("auto_pad", b"NOTSET") != b"NOTSET" \
                or attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [])) \
                or any(p >= k for p, k in zip(pads, kernel + kernel)):
            continue  # anything else is left to the scale check after conversion
        n = len(kernel)
        after_relu = getattr(producers.get(node.input[0]), "op_type", None) == "Relu"
        pads_name, padded = f"skinedge_maxpool{moved}_pads", f"skinedge_maxpool{moved}_padded"
        model.graph.initializer.append(onnx.numpy_helper.from_array(
            np.array([0, 0, *pads[:n], 0, 0, *pads[n:]], np.int64), pads_name))
        pad = onnx.helper.make_node("Pad", [node.input[0], pads_name], [padded], name=f"skinedge_maxpool{moved}_pad",
                                    mode="constant" if after_relu else "edge")
        model.graph.node.insert(list(model.graph.node).index(node), pad)
        node.input[0] = padded
        for a in node.attribute:
            if a.name == "pads":
                del a.ints[:]
                a.ints.extend([0] * 2 * n)
        moved += 1
    return moved


def _one_reader(readers: dict[str, list[onnx.NodeProto]], name: str, op_type: str) -> onnx.NodeProto | None:
    nodes = readers.get(name, [])
    return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op_type else None


def _channel_constant(node: onnx.NodeProto, init: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """The 3 per-channel values of a Mul/Add whose second input is a constant of shape (3,), (1,3,1,1) or scalar."""
    if len(node.input) != 2 or node.input[1] not in init:
        return None
    values = onnx.numpy_helper.to_array(init[node.input[1]]).astype(np.float64)
    return np.broadcast_to(values.reshape(-1), 3).copy() if values.size in (1, 3) else None


def _fold_input_scale(model: onnx.ModelProto) -> bool:
    """Rewrite the normalisation pixel*s + b as (pixel + b/s)*s and fold s into the convolutions that read it.

    TFLite gives every op's output its own 8-bit grid: the multiply's output (pixel*s) got one about 1.5 pixel
    levels wide before the add re-quantised it, which cost the int8 TFLite 4.5 points of agreement on
    EfficientNet-Lite2 (benchmarks/README.md). Folded, one Add of b/s on the raw pixels remains: for (x - 127)/128
    an integer shift that int8 holds exactly (scale 1), for per-channel mean/std one grid about a pixel level wide,
    as the int8 ONNX has. Zero padding stays exact (pixel + b/s = 0 is the normalised 0). Returns False, graph
    unchanged, unless the pattern is Mul -> Add [-> Gather on channels] -> only plain (group 1) convolutions."""
    graph, init = model.graph, {t.name: t for t in model.graph.initializer}
    readers = graph_readers(graph)
    mul = _one_reader(readers, graph.input[0].name, "Mul")
    add = mul and _one_reader(readers, mul.output[0], "Add")
    scale = mul and _channel_constant(mul, init)
    shift = add and _channel_constant(add, init)
    if add is None or scale is None or shift is None or not np.all(scale > 0):
        return False
    order, into = np.arange(3), add.output[0]
    gather = _one_reader(readers, into, "Gather")
    if gather is not None:  # BGR: channels reordered after the normalisation
        axis = {a.name: onnx.helper.get_attribute_value(a) for a in gather.attribute}.get("axis", 0)
        if axis != 1 or gather.input[1] not in init:
            return False
        order, into = onnx.numpy_helper.to_array(init[gather.input[1]]).reshape(-1), gather.output[0]
    convs = readers.get(into, [])
    groups = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.get("group", 1) for n in convs]
    if not convs or any(n.op_type != "Conv" or g != 1 or n.input[0] != into or n.input[1] not in init
                        or len(readers[n.input[1]]) != 1 for n, g in zip(convs, groups)):
        return False
    for conv in convs:
        weight = init[conv.input[1]]
        folded = onnx.numpy_helper.to_array(weight) * scale[order].reshape(1, -1, 1, 1)
        weight.CopyFrom(onnx.numpy_helper.from_array(folded.astype(np.float32), weight.name))
    offset = shift / scale
    near = np.round(offset)  # (x - 127)/128 gives -126.99999 in float32: make it the integer it means
    offset = np.where(np.abs(offset - near) < 1e-3, near, offset)
    graph.initializer.append(onnx.numpy_helper.from_array(offset.reshape(1, 3, 1, 1).astype(np.float32),
                                                          "skinedge_pixel_offset"))
    add.input[:] = [graph.input[0].name, "skinedge_pixel_offset"]
    graph.node.remove(mul)
    return True


def prepare_onnx(onnx_fp32: Path, out: Path, *, fold_input_scale: bool = True) -> tuple[onnx.ModelProto, int]:
    """Write the copy onnx2tf converts: float32 raw-pixel input, the normalisation's scale folded into the first
    convolutions (`_fold_input_scale`, unless told not to), MaxPool padding made explicit. Returns it and the
    number of MaxPools whose padding was moved."""
    model = onnx.load(str(onnx_fp32))
    _remove_input_cast(model, onnx_fp32)
    if fold_input_scale and not _fold_input_scale(model):
        print(f"tflite: {onnx_fp32.name}: the normalisation's scale stays a separate op (not Mul -> Add -> plain "
              "convolutions); the int8 TFLite quantises its output on its own grid", flush=True)
    moved = _explicit_maxpool_pads(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return model, moved


def _dims(value_info) -> list[int]:
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def map_outputs(details: list[dict], logits_shape: list[int], features_nchw: list[int], path: Path) -> dict[str, int]:
    """onnx2tf names outputs `PartitionedCall:N` and may reorder them: find logits by rank 2 and features by
    rank 4, then check both shapes against the ONNX ones ([1,K] and [1,C,h,w] -> [1,h,w,C])."""
    by_rank = {len(d["shape"]): i for i, d in enumerate(details)}
    shapes = [list(d["shape"]) for d in details]
    if len(details) != 2 or set(by_rank) != {2, 4}:
        raise RuntimeError(f"{path}: expected a 2-D logits and a 4-D features output, found {shapes}")
    n, c, h, w = features_nchw
    if shapes[by_rank[2]] != list(logits_shape) or shapes[by_rank[4]] != [n, h, w, c]:
        raise RuntimeError(f"{path}: outputs {shapes} do not match the ONNX logits {list(logits_shape)} and "
                           f"features {list(features_nchw)} (expected NHWC {[n, h, w, c]})")
    for d in details:
        if d["dtype"] != np.float32:
            raise RuntimeError(f"{path}: output {d['name']} is {np.dtype(d['dtype']).name}, expected float32")
    return {"logits": by_rank[2], "features": by_rank[4]}


def check_scales(details: list[dict], path: Path) -> None:
    """Refuse a tensor quantised over an absurd range (one calibrated on +-float32 max, ~1e36 per step)."""
    scales = [(d["name"], d["quantization_parameters"]["scales"]) for d in details]
    bad = [(name, float(s.max())) for name, s in scales if s.size and not s.max() < MAX_SCALE]
    if bad:
        raise RuntimeError(f"{path}: tensors quantised with absurd scales, i.e. calibrated on +-inf values "
                           f"(e.g. padding with -inf): {bad[:5]}")


def check_input(detail: dict, path: Path) -> tuple[float, int]:
    """The input must take the camera's uint8 pixel unchanged: scale 1, zero point 0."""
    scale, zp = detail["quantization"]
    if detail["dtype"] != np.uint8 or scale != 1.0 or zp != 0:
        raise RuntimeError(f"{path}: input should be uint8 with scale 1 and zero point 0, got "
                           f"{np.dtype(detail['dtype']).name} scale {scale} zero point {zp}")
    return float(scale), int(zp)


def calibration_pixels(calib: np.ndarray) -> np.ndarray:
    """Raw 0..255 float32 pixels, with one black and one white pixel so the input range is exactly 0..255
    (the input quantisation is per tensor, so two pixels fix it and change nothing else measurably)."""
    data = calib.astype(np.float32)
    data[0, 0, 0] = 0.0
    data[0, -1, -1] = 255.0
    return data


def onnx2tf_sample(calib: np.ndarray) -> np.ndarray:
    """onnx2tf's sample file, made from our own images: 20x128x128x3 float32 in [0, 1]."""
    pick = calib[np.arange(20) % len(calib)]
    return np.stack([cv2.resize(x, (128, 128), interpolation=cv2.INTER_AREA) for x in pick]).astype(np.float32) / 255


@contextlib.contextmanager
def _quiet_in(work: Path) -> Iterator[Path]:
    """Run inside `work`, with Python's and C++'s stdout/stderr appended to the conversion's log
    (convert/runlog.py), or to work/convert.log outside one."""
    log = log_path() or work / LOG
    cwd = Path.cwd()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            os.chdir(work)
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield log
        finally:
            os.chdir(cwd)
            f.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _failed(what: str, e: BaseException, log: Path) -> RuntimeError:
    """One line for a failed step; its log's last lines go to stderr when the log lives in a work folder that
    is about to be removed (outside a conversion log)."""
    if log_path() is None and log.is_file():
        print(f"--- {log} (removed with its folder) ends:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return RuntimeError(f"{what} ({type(e).__name__}: {first})" + (f"; details in {log_path()}" if log_path() else ""))


# A failure of the TFLite converter that says nothing about the model (seen once after 226 s, gone on a re-run:
# a thread or memory the machine could not give at that moment) is retried once.
TRANSIENT = ("Resource temporarily unavailable", "Cannot allocate memory", "Try again")


def transient(e: BaseException) -> bool:
    return (isinstance(e, OSError) and e.errno in (errno.EAGAIN, errno.ENOMEM, errno.EBUSY)) or \
        any(t in str(e) for t in TRANSIENT)


def retry_transient(fn: Callable[[], T], what: str) -> T:
    """fn(), once more if it failed transiently (the retry is said in the log and on stderr)."""
    try:
        return fn()
    except Exception as e:
        if not transient(e):
            raise
        print(f"tflite: {what} failed transiently ({type(e).__name__}: {e}); retrying once", file=sys.stderr,
              flush=True)
    return fn()


def _check_calib(calib: np.ndarray, size: tuple[int, int], onnx_fp32: Path) -> None:
    if calib.ndim != 4 or calib.shape[3] != 3 or calib.dtype != np.uint8 or len(calib) == 0:
        raise ValueError(f"calibration images: expected (N, H, W, 3) uint8, N >= 1; got {calib.shape} {calib.dtype}")
    if tuple(calib.shape[1:3]) != size:
        raise ValueError(f"calibration images are {calib.shape[1]}x{calib.shape[2]}, but {onnx_fp32} takes "
                         f"{size[0]}x{size[1]}: pass them through edge.preprocess.to_model_input")


def _saved_model(src: Path, input_name: str, calib: np.ndarray, work: Path) -> Path:
    """onnx2tf: ONNX -> TensorFlow SavedModel (it also writes float32/float16 .tflite files beside it)."""
    import onnx2tf

    np.save(work / ONNX2TF_SAMPLE, onnx2tf_sample(calib))
    # onnx2tf runs the ONNX graph on the first image to check its translation of each op.
    np.save(work / "onnx2tf_input.npy", calib[:1].astype(np.float32))
    onnx2tf.convert(
        input_onnx_file_path=str(src),
        output_folder_path=str(work / "saved_model"),
        output_signaturedefs=True,
        custom_input_op_name_np_data_path=[[input_name, str(work / "onnx2tf_input.npy")]],
        not_use_onnxsim=True,  # the export is already simplified (onnxslim), and onnxsim is not installed
        non_verbose=True,
    )
    return work / "saved_model"


def _full_integer(saved: Path, calib: np.ndarray, quant_type: str) -> bytes:
    """TFLiteConverter with onnx2tf's full-integer settings (uint8 input, float32 outputs), except that every
    FULLY_CONNECTED (the classifier's last layer) stays float: an int8 FULLY_CONNECTED writes int8 logits, and a
    logit above the calibration images' largest saturates and ties (see convert.quantize._float_logits).
    The converter calibrates, then quantises with `mlir_quantize`, the step TFLiteConverter itself runs after
    calibrating and the one that takes a denylist (tf.lite.experimental.QuantizationDebugger calls it so)."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    # Builtin kernels only (LiteRT on the board has no TensorFlow (Flex) ops): int8, and float for the denylisted.
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    data = calibration_pixels(calib)
    conv.representative_dataset = lambda: ([data[i : i + 1]] for i in range(len(data)))
    conv._experimental_calibrate_only = True
    return mlir_quantize(conv.convert(), quant_type == "per-tensor", input_data_type=tf.uint8,
                         output_data_type=tf.float32, denylisted_ops=list(FLOAT_OPS))


def check_integer(details: list[dict], tensors: list[dict], path: Path) -> None:
    """Every op but FLOAT_OPS and the (de)quantisers computes on integers: the int8-only converter refused a
    model it could not quantise, and float in int8's place would pass unnoticed now that float kernels are allowed."""
    by_index = {t["index"]: t for t in tensors}
    floaty = sorted({op["op_name"] for op in details if op["op_name"] not in (*FLOAT_OPS, "DEQUANTIZE", "QUANTIZE")
                     and any(by_index[i]["dtype"] == np.float32 for i in op["inputs"] if i >= 0)})
    if floaty:
        raise RuntimeError(f"{path}: TFLite left these ops float, expected int8: {', '.join(floaty)}")


def _check_in_litert(made: Path, image: np.ndarray, onnx_outputs: dict[str, list[int]], integer: bool = False
                     ) -> tuple[float, int, dict[str, int], str]:
    """Load and run the model in LiteRT (allocate_tensors catches unrunnable ones) and check its tensors (with
    `integer`, also that only FLOAT_OPS compute in float); the last item is edge.backends.tflite's note if XNNPACK
    refused it. A float32 model takes the raw pixels as float32 (scale 1, zero point 0 by construction)."""
    from edge.backends.tflite import interpreter_class, load_interpreter

    plain = interpreter_class()[0](model_path=str(made))
    check_scales(plain.get_tensor_details(), made)
    if integer:
        check_integer(plain._get_ops_details(), plain.get_tensor_details(), made)
    interp, note = load_interpreter(made, threads=1)
    detail = interp.get_input_details()[0]
    if detail["dtype"] == np.float32:
        scale, zp, image = 1.0, 0, image.astype(np.float32)
    else:
        scale, zp = check_input(detail, made)
    outputs = map_outputs(interp.get_output_details(), onnx_outputs["logits"], onnx_outputs["features"], made)
    interp.set_tensor(detail["index"], image)
    try:
        interp.invoke()
    except (RuntimeError, ValueError) as e:
        raise RuntimeError(f"{made}: LiteRT cannot run it: {e}") from e
    return scale, zp, outputs, note


@contextlib.contextmanager
def _translated(onnx_fp32: Path, calib: np.ndarray, workdir: Path | None, fold_input_scale: bool = True
                ) -> Iterator[tuple[Path, Path, dict]]:
    """onnx2tf's SavedModel of `onnx_fp32` in a work folder (removed afterwards unless `workdir` is given):
    yields (the prepared float-input ONNX, the SavedModel, the ONNX outputs' dims by name)."""
    work = Path(tempfile.mkdtemp(prefix="skinedge-tflite-")) if workdir is None else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "model.float_input.onnx"
        model, moved = prepare_onnx(onnx_fp32, src, fold_input_scale=fold_input_scale)
        inp = model.graph.input[0]
        _, _, h, w = _dims(inp)
        _check_calib(calib, (h, w), onnx_fp32)
        outs = {o.name: _dims(o) for o in model.graph.output}
        if set(outs) != {"logits", "features"}:
            raise ValueError(f"{onnx_fp32}: expected outputs 'logits' and 'features', found {sorted(outs)}")
        print(f"tflite: prepared {onnx_fp32.name} ({h}x{w}, {moved} MaxPool padding(s) made explicit) in {work}",
              flush=True)
        t = time.perf_counter()
        with _quiet_in(work) as log:
            try:
                saved = _saved_model(src, inp.name, calib, work)
            except (Exception, SystemExit) as e:  # onnx2tf calls sys.exit(1) on some errors
                raise _failed(f"{onnx_fp32}: onnx2tf failed", e, log) from e
        print(f"tflite: onnx2tf -> SavedModel {time.perf_counter() - t:.1f} s", flush=True)
        yield src, saved, outs
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _keep_float(onnx_fp32: Path, src: Path, saved: Path, image: np.ndarray, outs: dict, out: Path) -> dict[str, int]:
    """Check onnx2tf's float32 .tflite (written beside the SavedModel) in LiteRT and copy it to `out`; returns its
    output mapping."""
    floaty = saved / f"{src.stem}_float32.tflite"  # onnx2tf names it after the ONNX file
    with _quiet_in(saved.parent):
        try:
            outputs = _check_in_litert(floaty, image, outs)[2]
        except RuntimeError as e:
            raise RuntimeError(f"{onnx_fp32}: its float32 TFLite is unusable: {e}") from e
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(floaty, out)
    return outputs


def convert_float_tflite(onnx_fp32: Path, image: np.ndarray, out: Path, *, workdir: Path | None = None
                         ) -> dict[str, int]:
    """Write only onnx2tf's float32 model of `onnx_fp32` to `out` (LiteRT's float baseline, for when the int8
    model comes from other weights, as under --adaround, or is not wanted); `image`: (1,H,W,3) uint8 for
    onnx2tf's check. Returns its {"logits": i, "features": j} output mapping."""
    onnx_fp32 = Path(onnx_fp32)
    with _translated(onnx_fp32, image, workdir) as (src, saved, outs):
        return _keep_float(onnx_fp32, src, saved, image[:1], outs, out)


def convert_tflite(onnx_fp32: Path, calib: np.ndarray, out: Path, *, fp32_out: Path | None = None,
                   workdir: Path | None = None, quant_type: str = "per-channel", fold_input_scale: bool = True
                   ) -> TfliteResult:
    """Write int8 TFLite (uint8 input, float32 outputs, float last layer) calibrated on `calib`, (N,H,W,3) uint8
    images from edge.preprocess.to_model_input, and onnx2tf's float32 model to `fp32_out` if given.
    Intermediate files stay in `workdir` if one is given. `fold_input_scale=False` converts the graph as exported
    (TFLite's own converter, nothing else: the benchmark's baseline)."""
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type {quant_type!r}: expected one of {', '.join(QUANT_TYPES)}")
    onnx_fp32, out = Path(onnx_fp32), Path(out)
    t0 = time.perf_counter()
    with _translated(onnx_fp32, calib, workdir, fold_input_scale) as (src, saved, outs):
        work = saved.parent
        t = time.perf_counter()
        made = work / "model.int8.tflite"
        with _quiet_in(work) as log:
            try:
                made.write_bytes(retry_transient(lambda: _full_integer(saved, calib, quant_type),
                                                 "int8 quantisation"))
            except Exception as e:
                raise _failed(f"{onnx_fp32}: TFLite int8 quantisation failed", e, log) from e
        print(f"tflite: int8 {quant_type} calibration on {len(calib)} images {time.perf_counter() - t:.1f} s",
              flush=True)

        with _quiet_in(work):
            try:
                scale, zp, outputs, note = _check_in_litert(made, calib[:1], outs, integer=True)
            except RuntimeError as e:
                keep = "" if workdir else " (pass workdir to keep the intermediate files)"
                raise RuntimeError(f"{onnx_fp32}: its int8 TFLite is unusable{keep}: {e}") from e
        fp32_outputs = None if fp32_out is None else _keep_float(onnx_fp32, src, saved, calib[:1], outs, fp32_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made, out)
    seconds = time.perf_counter() - t0
    print(f"tflite: {out} ({out.stat().st_size / 1e6:.2f} MB) runs in LiteRT: uint8 input scale 1 zero point 0, "
          f"outputs {outputs}, {seconds:.1f} s in all{'; ' + note if note else ''}", flush=True)
    return TfliteResult(out, scale, zp, "uint8", outputs, "NHWC", seconds,
                        None if fp32_out is None else Path(fp32_out), fp32_outputs, note)
