"""TensorRT backend for Jetson: an engine built on the board from the bundle's QDQ int8 ONNX (explicit
quantisation; FP16 from the fp32 ONNX as an option), cached and reused.

TensorRT takes only symmetric quantisation (zero point 0), while the bundle's int8 ONNX has the uint8
activations ONNX Runtime runs best and most faithfully: `symmetric_qdq` rewrites each activation's
range symmetrically before the build. The converter validates that same rewrite (run by ONNX Runtime)
and reports it as the `int8_onnx (TensorRT form)` row of the fidelity table.

Engines are tied to the GPU and the TensorRT version, so the cache key is (bundle hash, artefact,
TensorRT version, GPU name); a key change means a rebuild, and stale engines of the same member are
removed. Everything that touches TensorRT or CUDA is in the `_trt_*` functions at the bottom, written
for the TensorRT 8.5/8.6 (JetPack 5) and 10.x (JetPack 6) Python APIs — both have the named-tensor API
(`num_io_tensors`, `set_tensor_address`, `execute_async_v3`). That part has NOT been run on hardware:
this project has no GPU. The rest (keys, cache, buffers, output mapping) is tested here.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENGINE_CACHE_ENV = "SKINEDGE_ENGINE_CACHE"


def cache_key(bundle_digest: str, artefact: str, trt_version: str, gpu_name: str) -> str:
    """Engine identity: anything that makes an engine invalid changes the key."""
    raw = f"{bundle_digest}\n{artefact}\n{trt_version}\n{gpu_name}".encode()
    return hashlib.sha256(raw).hexdigest()[:20]


def cache_dir(bundle_root: Path) -> Path:
    """$SKINEDGE_ENGINE_CACHE, else `<bundle>.engines` beside the bundle (the bundle itself may be read-only)."""
    env = os.environ.get(ENGINE_CACHE_ENV)
    return Path(env) if env else bundle_root.parent / f"{bundle_root.name}.engines"


def engine_path(cache: Path, member: str, key: str) -> Path:
    return cache / f"{member}.{key}.engine"


def stale_engines(cache: Path, member: str, key: str) -> list[Path]:
    """Engines of this member built under another key (other bundle, TensorRT or GPU)."""
    keep = engine_path(cache, member, key)
    return [p for p in cache.glob(f"{member}.*.engine") if p != keep]


def save_atomically(path: Path, data: bytes) -> None:
    """temp file + fsync + rename, so a power cut never leaves a truncated engine that would be loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def symmetric_qdq(model_bytes: bytes, keep_grid: bool = True) -> bytes:
    """The QDQ model in the form TensorRT builds: zero points 0. With `keep_grid`, a convolution's output loses the
    Q/DQ pair before its Clip/Relu (TensorRT fuses convolution and activation) and every uint8 activation keeps its
    grid as the int8 grid of the shifted tensor (edge.backends.qdq_shift); any uint8 activation quantisation left
    (scale s, zero point z, covering [-s*z, s*(255-z)]: all of them without `keep_grid`, the plain rewrite the
    benchmarks compare with) is replaced by the int8 one with zero point 0 that covers the same range (at up to twice
    the step).

    Sound only because the converter keeps Clip/Relu in the graph: a uint8 range starting at 0 clamps
    negative values, and the explicit activation still does once the range is symmetric."""
    import onnx
    from onnx import numpy_helper

    from edge.backends.qdq_shift import keep_int8_grid

    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ValueError(f"not an ONNX model ({type(e).__name__}: {e})") from e
    if keep_grid:
        keep_int8_grid(model)
    init = {t.name: t for t in model.graph.initializer}
    pairs: dict[str, str] = {}  # zero point initializer -> scale initializer
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) != 3:
            continue
        zp = init.get(node.input[2])
        if zp is not None and zp.data_type == onnx.TensorProto.UINT8 and pairs.setdefault(zp.name, node.input[1]) != \
                node.input[1]:
            raise ValueError(f"zero point {zp.name} is shared by two scales")
    for zp_name, scale_name in pairs.items():
        if scale_name not in init:
            raise ValueError(f"scale {scale_name} of zero point {zp_name} is not a constant")
        z = numpy_helper.to_array(init[zp_name]).astype(np.float64)
        s = numpy_helper.to_array(init[scale_name]).astype(np.float64)
        amax = np.maximum(s * z, s * (255 - z))
        init[scale_name].CopyFrom(numpy_helper.from_array((amax / 127).astype(np.float32), scale_name))
        init[zp_name].CopyFrom(numpy_helper.from_array(np.zeros(z.shape, np.int8), zp_name))
    return model.SerializeToString()


def engine_source(onnx_path: Path, fp16: bool) -> bytes:
    """The ONNX bytes TensorRT parses: the fp32 ONNX as it is (FP16 build), else the int8 ONNX's TensorRT form."""
    try:
        return onnx_path.read_bytes() if fp16 else symmetric_qdq(onnx_path.read_bytes())
    except ValueError as e:
        raise RuntimeError(f"{onnx_path}: cannot prepare it for TensorRT: {e}") from e


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    is_input: bool


@dataclass(frozen=True)
class IOPlan:
    """Which engine tensor is the image, the logits and the features, and how to lay the image out."""

    input: TensorSpec
    logits: TensorSpec
    features: TensorSpec
    layout: str  # "NCHW" or "NHWC"


def plan_io(specs: list[TensorSpec]) -> IOPlan:
    """Map engine tensors by name ('logits'/'features' survive the ONNX parser), else by rank."""
    inputs = [s for s in specs if s.is_input]
    outputs = [s for s in specs if not s.is_input]
    if len(inputs) != 1 or len(outputs) != 2:
        raise RuntimeError(f"engine should have 1 input and 2 outputs, found {[s.name for s in specs]}")
    by_name = {s.name: s for s in outputs}
    if set(by_name) == {"logits", "features"}:
        logits, features = by_name["logits"], by_name["features"]
    else:
        logits = next((s for s in outputs if len(s.shape) == 2), None)
        features = next((s for s in outputs if len(s.shape) == 4), None)
        if logits is None or features is None:
            raise RuntimeError(f"cannot tell logits from features in {[(s.name, s.shape) for s in outputs]}")
    shape = inputs[0].shape
    if len(shape) != 4 or 3 not in (shape[1], shape[3]):
        raise RuntimeError(f"engine input {inputs[0].name} has shape {shape}, expected 1x3xHxW or 1xHxWx3")
    return IOPlan(inputs[0], logits, features, "NCHW" if shape[1] == 3 else "NHWC")


def host_input(plan: IOPlan, img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the engine input's layout and dtype, contiguous."""
    x = img.transpose(2, 0, 1)[None] if plan.layout == "NCHW" else img[None]
    if tuple(x.shape) != plan.input.shape:
        raise ValueError(f"image {img.shape} does not fit engine input {plan.input.shape}")
    return np.ascontiguousarray(x.astype(plan.input.dtype, copy=False))


class TensorrtBackend:
    name = "tensorrt"
    note = ""  # no CPU-dependent integer saturation to report

    def __init__(self, model_path: Path, bundle_root: Path, threads: int = 1, artefact: str = "int8_onnx",
                 bundle_digest: str | None = None):
        import tensorrt as trt  # JetPack's TensorRT; not on PyPI for Jetson

        self.artefact = artefact
        from edge.trust.bundle import MANIFEST, sha256_file

        digest = bundle_digest or sha256_file(bundle_root / MANIFEST)
        member = model_path.parent.name if model_path.parent != bundle_root else "model"
        key = cache_key(digest, artefact, trt.__version__, _gpu_name())
        cache = cache_dir(bundle_root)
        path = engine_path(cache, member, key)
        if not path.is_file():
            for old in stale_engines(cache, member, key):
                old.unlink()
            save_atomically(path, _trt_build(trt, model_path, fp16=artefact == "fp32_onnx"))
        self.engine_path = path
        self._engine, self._context = _trt_load(trt, path.read_bytes())
        self.plan = plan_io(_trt_specs(trt, self._engine))
        self._buffers = _CudaBuffers([self.plan.input, self.plan.logits, self.plan.features])
        for spec in (self.plan.input, self.plan.logits, self.plan.features):
            self._context.set_tensor_address(spec.name, self._buffers.device[spec.name])

    def run(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._buffers.to_device(self.plan.input.name, host_input(self.plan, img))
        if not self._context.execute_async_v3(self._buffers.stream):
            raise RuntimeError(f"{self.engine_path}: TensorRT execution failed")
        logits = self._buffers.to_host(self.plan.logits)
        features = self._buffers.to_host(self.plan.features)
        return logits.reshape(-1).astype(np.float32), features[0].astype(np.float32)


# --- everything below touches TensorRT / CUDA and is unverified on hardware --------------------------

def _gpu_name() -> str:
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or "unknown-gpu"
    except OSError:
        cudart = _cudart()
        _err, props = cudart.cudaGetDeviceProperties(0)
        return props.name.decode() if isinstance(props.name, bytes) else str(props.name)


def _trt_build(trt, onnx_path: Path, fp16: bool) -> bytes:
    data = engine_source(onnx_path, fp16)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # TensorRT 10 networks are always explicit-batch
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        # The QDQ nodes carry the scales (explicit quantisation); INT8 enables int8 kernels for them.
        config.set_flag(trt.BuilderFlag.INT8)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed")
    return bytes(engine)


def _trt_load(trt, data: bytes):
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise RuntimeError("TensorRT could not deserialise the cached engine (delete it to rebuild)")
    return engine, engine.create_execution_context()


def _trt_specs(trt, engine) -> list[TensorSpec]:
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        specs.append(TensorSpec(name, tuple(engine.get_tensor_shape(name)),
                                np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                                engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT))
    return specs


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


class _CudaBuffers:
    """Device buffers and a stream through cuda-python."""

    def __init__(self, specs: list[TensorSpec]):
        self.cudart = _cudart()
        _, self.stream = self.cudart.cudaStreamCreate()
        self.device = {}
        for s in specs:
            _, ptr = self.cudart.cudaMalloc(int(np.prod(s.shape)) * s.dtype.itemsize)
            self.device[s.name] = int(ptr)

    def to_device(self, name: str, host: np.ndarray) -> None:
        self.cudart.cudaMemcpyAsync(self.device[name], host.ctypes.data, host.nbytes,
                                    self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)

    def to_host(self, spec: TensorSpec) -> np.ndarray:
        out = np.empty(spec.shape, spec.dtype)
        self.cudart.cudaMemcpyAsync(out.ctypes.data, self.device[spec.name], out.nbytes,
                                    self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
        self.cudart.cudaStreamSynchronize(self.stream)
        return out
