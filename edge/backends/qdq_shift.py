"""The int8 ONNX's uint8 activations in a form TensorRT can build, without losing their grid.

TensorRT takes only int8 with zero point 0. A uint8 grid (scale s, zero point z) is exactly the int8 grid of the
tensor shifted by c = s·(128 - z): q_int8 = q_uint8 - 128. So every activation keeps all 256 levels of its grid
(a ReLU6 output on a symmetric grid would keep 128) if the shift goes where TensorRT fuses it anyway:

- on the writing side, into the convolution that writes the tensor: its bias, and the bounds of its Clip/Relu, take
  -c (Clip(conv(x)) - c = Clip(conv(x) - c, lo - c, hi - c)); any other writer (a residual sum, the pooled
  features, the logits) gets an explicit Sub of c before its QuantizeLinear;
- on the reading side, into each convolution that reads it: its bias takes +c·ΣW per output channel (conv(x + c) =
  conv(x) + c·ΣW away from the border), and a padded one gets an explicit Pad of value -c (the shifted zero) and
  no padding of its own; any other reader (a residual sum, pooling, a Gemm) and a graph output (the features) read
  it through an explicit Add of c.

The convolution's own output before a Clip/Relu loses its Q/DQ pair first (`pre_activation_pairs`): TensorRT fuses
convolution + bias + activation and quantises only what the activation writes.

The shifted form computes what the int8 ONNX computes up to float rounding: (T - c)/s and T/s - 128 can differ in
the last bit, so a value at a grid midpoint may round the other way, and such differences grow through the layers.
Measured on EfficientNet-Lite (benchmarks/README.md). Whether TensorRT fuses the explicit Sub/Add/Pad nodes into its
int8 kernels, and at what speed, is not verified here (no GPU).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

ACTIVATIONS = ("Clip", "Relu")


def keep_int8_grid(model: onnx.ModelProto) -> None:
    """In place: the pre-activation pairs removed, then every uint8 activation shifted (the module docstring)."""
    unquantise(model, pre_activation_pairs(model))
    shift(model)


def pre_activation_pairs(model: onnx.ModelProto) -> set[str]:
    """Convolution outputs whose Q/DQ pair feeds only a Clip/Relu (and is no graph output)."""
    g = _Graph(model)
    return {t for t in g.quantised if g.producer_type(t) == "Conv" and g.reader_types(t) <= set(ACTIVATIONS)
            and t not in g.outputs}


def shift(model: onnx.ModelProto) -> list[str]:
    """In place, after the pre-activation pairs are gone: each uint8 activation's grid becomes the int8 grid of the
    shifted tensor (see the module docstring). Returns the tensors shifted; the others are left as they were."""
    g = _Graph(model)
    done = []
    for t in list(g.quantised):
        c = g.shift_of(t)
        if c is None:
            continue
        q = g.quantise[t]
        g.set_initializer(q.input[2], np.zeros(g.array(q.input[2]).shape, np.int8))
        if c:
            g.shift_producer(t, c)
            for dq in g.dequantisers(t):
                x = dq.output[0]
                readers = g.readers(x)
                folded = [g.foldable(r, x) for r in readers]  # once: folding a padded reader moves it off x
                for reader, fold in zip(readers, folded):
                    if fold:
                        g.fold_into_reader(reader, x, c)
                rest = [r for r, fold in zip(readers, folded) if not fold]
                if rest or x in g.outputs:
                    g.add_back(dq, c, rest)
        done.append(t)
    g.commit()
    return done


def unquantise(model: onnx.ModelProto, tensors: set[str]) -> None:
    """Remove, in place, the QuantizeLinear/DequantizeLinear pair on each named activation (a QuantizeLinear's
    input): its readers read the float tensor. A pair that ends in a graph output keeps the output's name."""
    graph = model.graph
    quantise = {n.input[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    unknown = sorted(tensors - quantise.keys())
    if unknown:
        raise ValueError(f"no quantised activation named {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)"
                                                                           if len(unknown) > 1 else ""))
    q_out = {quantise[t].output[0]: t for t in tensors}
    outputs = {o.name for o in graph.output}
    dead, rename = set(), {}
    for i, node in enumerate(graph.node):
        if node.op_type == "QuantizeLinear" and node.output[0] in q_out:
            dead.add(i)
        elif any(name in q_out for name in node.input):
            if node.op_type != "DequantizeLinear":
                raise ValueError(f"{node.name or node.op_type} reads the quantised {node.input[0]!r} directly")
            dead.add(i)
            rename[node.output[0]] = q_out[node.input[0]]
    for tensor in tensors:  # the surviving name: the graph output's, where a pair ends in one
        kept = next((d for d, t in rename.items() if t == tensor and d in outputs), tensor)
        for d, t in list(rename.items()):
            if t == tensor:
                rename[d] = kept
        if kept != tensor:
            rename[tensor] = kept
    nodes = []
    for i, node in enumerate(graph.node):
        if i in dead:
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for seq in (copy.input, copy.output):
            for j, name in enumerate(seq):
                seq[j] = rename.get(name, name)
        nodes.append(copy)
    del graph.node[:]
    graph.node.extend(nodes)
    prune(model)


def prune(model: onnx.ModelProto) -> None:
    """In place: drop the nodes whose outputs nobody reads (repeatedly), then the initializers nobody reads."""
    graph = model.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)


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

    def foldable(self, reader: onnx.NodeProto, x: str) -> bool:
        """A convolution with constant weights and bias reading x as its data input only."""
        return self._constant_layer(reader) and reader.input[0] == x and x not in reader.input[1:]

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
        """c = s·(128 - z) for an activation quantised to uint8 with one constant scale and zero point."""
        q = self.quantise[t]
        if t in self.outputs or t not in self.producer or len(q.input) != 3 or not self.dequantisers(t):
            return None
        if q.input[1] not in self.init or q.input[2] not in self.init:
            return None
        zp = self.init[q.input[2]]
        if zp.data_type != onnx.TensorProto.UINT8 or self.array(q.input[2]).size != 1:
            return None
        s, z = float(self.array(q.input[1])), int(self.array(q.input[2]))
        return s * (128 - z)

    def _constant_layer(self, node: onnx.NodeProto | None) -> bool:
        """A Conv whose weights and bias are constants (so its bias can take a shift)."""
        return node is not None and node.op_type == "Conv" and all(
            self.value(node.input[i]) is not None for i in (1, 2) if len(node.input) > i and node.input[i])

    def shift_producer(self, t: str, c: float) -> None:
        """Make t - c what the QuantizeLinear reads: folded into a convolution (and its Clip/Relu) that writes t for
        the QuantizeLinear alone, else an explicit Sub before it."""
        p, q = self.producer[t], self.quantise[t]
        alone = self.readers(t) == [q]
        if alone and p.op_type in ACTIVATIONS and self.readers(p.input[0]) == [p] and \
                p.input[0] not in self.outputs and self._constant_layer(self.producer.get(p.input[0])):
            conv = self.producer[p.input[0]]
            self.add_to_bias(conv, np.full(self.value(conv.input[1]).shape[0], -c))
            self.shift_bounds(p, -c)
        elif alone and self._constant_layer(p):
            self.add_to_bias(p, np.full(self.value(p.input[1]).shape[0], -c))
        else:
            shifted = self._fresh(f"{t}_shifted")
            sub = helper.make_node("Sub", [t, self._constant(f"{shifted}_by", c)], [shifted])
            q.input[0] = shifted
            self.new_nodes.append((sub, next(i for i, n in enumerate(self.nodes) if n is q)))

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
        w = self.value(conv.input[1])
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
        """Insert the new Pad, Sub and Add nodes where they belong (graph order stays topological) and drop what the
        edits left unread (an int32 bias's DequantizeLinear, a bias shifted twice)."""
        self._insert_new_nodes()
        prune(self.model)

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
