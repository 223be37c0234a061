"""A PyTorch checkpoint as the float column of `skinedge val`: the model the artefacts were made from, run on the
same uint8 model inputs (its normalisation inside, as in the exported graph) and gated the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convert.export import PRESETS, FeatureTap, Preprocessing
from convert.pipeline import ConvertError, _members, load_checkpoint
from convert.zoo import UnknownArchError, build_model, split_model
from edge.answer import Prepared
from edge.classify import softmax
from edge.gates import Gates, Verdict


def checkpoint_meta(path: Path) -> dict:
    """arch, labels and size as `skinedge train` stores them beside the weights ({} for other checkpoints)."""
    if not Path(path).is_file():  # a FIFO would block torch.load: load_checkpoint says what is wrong, in one line
        return {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - load_checkpoint says what is wrong with it, in one line
        return {}
    return {k: obj[k] for k in ("arch", "labels", "size") if isinstance(obj, dict) and k in obj}


def preprocessing_of(normalisation: dict | None) -> Preprocessing:
    """The bundle manifest's `input.normalisation`, or ImageNet's (what `skinedge train` normalises with)."""
    if not normalisation:
        return PRESETS["imagenet"]
    return Preprocessing(tuple(normalisation["mean"]), tuple(normalisation["std"]),
                         normalisation.get("channel_order", "RGB"), normalisation.get("preset"))


def float_predict(checkpoint: Path, arch: str, labels: list[str], normalisation: dict | None, gates: Gates,
                  trust: bool = False):
    """predict(prepared image) -> (probabilities, the gates' verdict), from the checkpoint's float weights."""
    try:
        model = build_model(arch, len(labels))
    except (UnknownArchError, ValueError) as e:
        raise ConvertError(str(e)) from e
    load_checkpoint(model, checkpoint, trust)
    members = _members(model.eval(), arch)
    pre = preprocessing_of(normalisation)
    taps = [FeatureTap(split_model(m), pre).eval() for _, _, m in members]
    weights = np.array([w for _, w, _ in members], np.float64)
    weights /= weights.sum()

    def predict(prep: Prepared) -> tuple[np.ndarray, Verdict]:
        """As edge.answer.Answerer.answer: the members' weighted probabilities, the gates on their outputs."""
        x = torch.from_numpy(prep.image.copy()).permute(2, 0, 1)[None]
        with torch.no_grad():
            outs = [(lg[0].numpy().astype(np.float64), f[0].numpy()) for lg, f in (t(x) for t in taps)]
        probs = sum(w * softmax(lg) for w, (lg, _) in zip(weights, outs))
        return probs, gates(prep.image, [lg for lg, _ in outs], [f for _, f in outs])

    return predict
