"""The int8 ONNX's uint8 activations in a form TensorRT can build without losing their grid.

TensorRT takes only int8 with zero point 0. A uint8 grid (scale s, zero point z) is exactly the int8 grid of the
tensor shifted by c = s·(128 - z): q_int8 = q_uint8 - 128. So a ReLU/ReLU6 output keeps all 256 levels if the
shift is folded into the graph where TensorRT fuses it anyway:

- the producing convolution's bias and the Clip bounds take -c (Clip(conv(x)) - c = Clip(conv(x) - c, lo - c,
  hi - c)), so the quantised tensor is the shifted one;
- each reading convolution's bias takes +c·ΣW per output channel (conv(x + c) = conv(x) + c·ΣW away from the
  border); a padded convolution gets an explicit Pad whose value is -c (the shifted zero) and no padding of its own.

The convolution's own output before the Clip/Relu loses its Q/DQ pair in this form: TensorRT fuses
convolution + bias + activation and quantises only what the activation writes, as here.

Measured on EfficientNet-Lite (benchmarks/README.md): with the activations' grid kept this way the form agrees with
the float model as the int8 ONNX does, where the plain symmetric rewrite (every activation's range made symmetric:
half the levels of a ReLU output) lost up to 5 points. Whether TensorRT fuses DequantizeLinear -> Pad -> Conv into an
int8 convolution is not verified here (no GPU).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

ACTIVATIONS = ("Clip", "Relu")


def pre_activation_pairs(model: onnx.ModelProto) -> set[str]:
    """Convolution outputs whose Q/DQ pair feeds only a Clip/Relu (and is no graph output)."""
    g = _Graph(model)
    return {t for t in g.quantised if g.producer_type(t) == "Conv" and g.reader_types(t) <= set(ACTIVATIONS)
            and t not in g.outputs}


def shift(model: onnx.ModelProto) -> list[str]:
    """In place, after the pre-activation pairs are gone: each eligible Clip/Relu output's uint8 grid becomes the int8
    grid of the shifted tensor (see the module docstring). Returns the tensors shifted; the others are left alone."""
    g = _Graph(model)
    done = []
    for t in list(g.quantised):
        c = g.shift_of(t)
        if c is None:
            continue
        act = g.producer[t]
        conv = g.producer[act.input[0]]
        g.add_to_bias(conv, np.full(_out_channels(g, conv), -c, np.float32))
        g.shift_bounds(act, -c)
        q = g.quantise[t]
        g.set_initializer(q.input[2], np.zeros(g.array(q.input[2]).shape, np.int8))
        for dq in g.dequantisers(t):
            readers = [n for n in g.nodes if dq.output[0] in n.input]
            for reader in [r for r in readers if g.foldable(r, dq.output[0])]:
                g.fold_into_reader(reader, dq.output[0], c)
            if dq.output[0] in g.outputs or not all(g.foldable(r, dq.output[0]) for r in readers):
                g.add_back(dq, c, [r for r in readers if not g.foldable(r, dq.output[0])])
        done.append(t)
    g.commit()
    return done


class _Graph:
    """The few lookups and edits the shift needs, over one ModelProto."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes = list(model.graph.node)
        self.init = {t.name: t for t in model.graph.initializer}
        self.outputs = {o.name for o in model.graph.output}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.quantise = {n.input[0]: n for n in self.nodes if n.op_type == "QuantizeLinear"}
        self.quantised = list(self.quantise)
        self.names = set(self.init) | set(self.producer) | {i.name for i in model.graph.input}
        self.new_nodes: list[tuple[onnx.NodeProto, int]] = []  # (node, index in `nodes` to insert it before)

    def producer_type(self, t: str) -> str | None:
        n = self.producer.get(t)
        return n.op_type if n is not None else None

    def dequantisers(self, t: str) -> list[onnx.NodeProto]:
        q = self.quantise[t].output[0]
        return [n for n in self.nodes if n.op_type == "DequantizeLinear" and n.input[0] == q]

    def readers(self, name: str) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if name in n.input]

    def _conv_readers(self, t: str) -> list[onnx.NodeProto]:
        return [r for dq in self.dequantisers(t) for r in self.readers(dq.output[0]) if r.op_type == "Conv"]

    def foldable(self, reader: onnx.NodeProto, x: str) -> bool:
        """A convolution reading x as its data input (its weights and bias are checked by shift_of)."""
        return reader.op_type == "Conv" and reader.input[0] == x and x not in reader.input[1:]

    def add_back(self, dq: onnx.NodeProto, c: float, readers: list[onnx.NodeProto]) -> None:
        """An explicit Add of c after `dq` for readers that cannot absorb it (pooling, a residual sum) and for a
        graph output (the features Grad-CAM reads): cheap pointwise work outside the int8 convolutions."""
        x = dq.output[0]
        if x in self.outputs:  # the graph output keeps its name, now on the Add, which every reader reads
            src, out = self._fresh(f"{x}_shifted"), x
            dq.output[0] = src
        else:
            src, out = x, self._fresh(f"{x}_unshifted")
            for r in readers:
                for i, name in enumerate(r.input):
                    if name == x:
                        r.input[i] = out
        add = helper.make_node("Add", [src, self._constant(f"{out}_shift", c)], [out])
        self.new_nodes.append((add, next(i for i, n in enumerate(self.nodes) if n is dq) + 1))

    def reader_types(self, t: str) -> set[str]:
        return {r.op_type for dq in self.dequantisers(t) for r in self.readers(dq.output[0])}

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.init[name])

    def shift_of(self, t: str) -> float | None:
        """c = s·(128 - z) for a Clip/Relu output of a convolution, read (through its pair) only by convolutions;
        None where the shift cannot be folded."""
        act = self.producer.get(t)
        q = self.quantise[t]
        if act is None or act.op_type not in ACTIVATIONS or t in self.outputs or len(q.input) != 3:
            return None
        conv = self.producer.get(act.input[0])
        if conv is None or conv.op_type != "Conv" or len(self.readers(act.input[0])) != 1 or act.input[0] in self.outputs:
            return None
        if any(self.value(n.input[i]) is None for n in (conv, *self._conv_readers(t)) for i in (1, 2)
               if len(n.input) > i and n.input[i]):
            return None
        if self.readers(t) != [q] or q.input[1] not in self.init or q.input[2] not in self.init:
            return None
        zp = self.init[q.input[2]]
        if zp.data_type != onnx.TensorProto.UINT8 or self.array(q.input[2]).size != 1 or not self.dequantisers(t):
            return None
        s, z = float(self.array(q.input[1])), int(self.array(q.input[2]))
        return s * (128 - z)

    def _weights(self, conv: onnx.NodeProto) -> np.ndarray | None:
        """The convolution's weights as float, None if not constant."""
        return self.value(conv.input[1])

    def value(self, name: str) -> np.ndarray | None:
        """A constant as float: an initializer, or a DequantizeLinear of initializers (int8 weights, int32 bias)."""
        if name in self.init:
            return self.array(name).astype(np.float64)
        dq = self.producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or any(i not in self.init for i in dq.input if i):
            return None
        q = self.array(dq.input[0]).astype(np.float64)
        scale = self.array(dq.input[1]).astype(np.float64)
        zp = self.array(dq.input[2]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] else 0.0
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if np.ndim(scale):
            shape[axis % q.ndim] = -1
        return (q - np.reshape(zp, shape)) * np.reshape(scale, shape)

    def add_to_bias(self, conv: onnx.NodeProto, delta: np.ndarray) -> None:
        """A float bias of the old one + delta (an int32 bias behind a DequantizeLinear becomes float: TensorRT
        quantises none of its biases)."""
        base = self.value(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else 0.0
        name = self._fresh(f"{conv.output[0]}_bias_shifted")
        self.set_initializer(name, (base + delta).astype(np.float32))
        if len(conv.input) > 2:
            conv.input[2] = name
        else:
            conv.input.append(name)

    def shift_bounds(self, act: onnx.NodeProto, delta: float) -> None:
        """Clip(x) + delta = Clip(x + delta, lo + delta, hi + delta); a Relu becomes Clip(x, delta)."""
        if act.op_type == "Relu":
            act.op_type = "Clip"
            del act.input[1:]
            act.input.append(self._constant(f"{act.output[0]}_min_shifted", delta))
            return
        for i in (1, 2):
            if len(act.input) > i and act.input[i]:
                act.input[i] = self._constant(f"{act.output[0]}_bound{i}_shifted",
                                              float(self.array(act.input[i])) + delta)

    def fold_into_reader(self, conv: onnx.NodeProto, x: str, c: float) -> None:
        """`conv` reads x - c: its bias takes +c·ΣW, and its padding becomes a Pad of value -c before it."""
        w = self._weights(conv)
        self.add_to_bias(conv, c * w.reshape(w.shape[0], -1).sum(1))
        pads = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [])
        if not any(pads):
            return
        half = len(pads) // 2
        padded = self._fresh(f"{x}_padded_shifted")
        pad = helper.make_node("Pad", [x, self._ints(f"{padded}_pads", [0, 0, *pads[:half], 0, 0, *pads[half:]]),
                                       self._constant(f"{padded}_value", -c)], [padded], mode="constant")
        conv.input[0] = padded
        for a in conv.attribute:
            if a.name == "pads":
                a.ints[:] = [0] * len(pads)
        self.new_nodes.append((pad, next(i for i, n in enumerate(self.nodes) if n is conv)))

    def set_initializer(self, name: str, value: np.ndarray) -> None:
        tensor = numpy_helper.from_array(value, name)
        if name in self.init:
            self.init[name].CopyFrom(tensor)
        else:
            self.model.graph.initializer.append(tensor)
            self.init[name] = self.model.graph.initializer[-1]

    def _constant(self, name: str, value: float) -> str:
        name = self._fresh(name)
        self.set_initializer(name, np.array(value, np.float32))
        return name

    def _ints(self, name: str, values: list[int]) -> str:
        name = self._fresh(name)
        self.set_initializer(name, np.array(values, np.int64))
        return name

    def _fresh(self, name: str) -> str:
        """A name no initializer or node output has yet, reserved."""
        k, out = 0, name
        while out in self.names:
            k += 1
            out = f"{name}_{k}"
        self.names.add(out)
        return out

    def commit(self) -> None:
        """Insert the new Pad and Add nodes where they belong (graph order stays topological) and drop the
        initializers the edits left unread (a bias shifted twice)."""
        self._insert_new_nodes()
        used = {name for n in self.model.graph.node for name in n.input}
        dead = [t for t in self.model.graph.initializer if t.name not in used]
        for t in dead:
            self.model.graph.initializer.remove(t)

    def _insert_new_nodes(self) -> None:
        if not self.new_nodes:
            return
        before: dict[int, list[onnx.NodeProto]] = {}
        for node, i in self.new_nodes:
            before.setdefault(i, []).append(node)
        nodes = []
        for i, n in enumerate(self.nodes):
            nodes += before.get(i, [])
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            nodes.append(copy)
        nodes += before.get(len(self.nodes), [])
        del self.model.graph.node[:]
        self.model.graph.node.extend(nodes)


def _out_channels(g: _Graph, conv: onnx.NodeProto) -> int:
    w = g._weights(conv)
    if w is None:
        raise ValueError(f"{conv.name or conv.output[0]}: weights are not constant")
    return w.shape[0]
