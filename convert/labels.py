"""Class names for a conversion, and the model built for them.

Where the names come from, first that applies: `--labels` (a list or a file), the class folders of a
`--calib` tree, or the model itself — a factory's own head and its `.labels` (e.g. ImageNet names), else
class_0 .. class_{K-1}. An unlabelled calibration folder thus needs neither labels nor one folder per class.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from calibration.dataset import DatasetError, read_labels
from convert.zoo import build_model, split_model


def num_outputs(model: nn.Module) -> int:
    """Outputs of the model's head (an ensemble's members all have the same)."""
    member = getattr(model, "members", [model])[0]
    linears = [m for m in split_model(member).head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(member).__name__}: its head has no Linear layer, so its outputs are unknown")
    return linears[-1].out_features


def resolve(arch: str, given: Sequence[str] | str | None, folders: Sequence[str] | None) -> tuple[list[str], nn.Module]:
    """(class names, model with that many outputs). `given`: names, or a --labels string (file or comma list);
    `folders`: the calibration tree's classes (None for a flat folder). DatasetError/ValueError in one line."""
    if isinstance(given, str):
        given = read_labels(given)
    if given is not None or folders is not None:
        labels = list(given if given is not None else folders)
        model = build_model(arch, len(labels))
        source = "--labels" if given is not None else "the --calib class folders"
    else:
        model = build_model(arch, None)
        k = num_outputs(model)
        own = getattr(model, "labels", None)
        labels = list(own) if own is not None else [f"class_{i}" for i in range(k)]
        source = f"{arch}'s own .labels"
    k = num_outputs(model)
    if k != len(labels):
        raise DatasetError(f"labels do not match the head: {len(labels)} class names from {source}, but {arch} "
                           f"has {k} outputs")
    if k < 2:  # softmax of one logit is always 1: nothing to classify, validate or self-test
        raise DatasetError(f"one class only ({labels[0]!r}, from {source}): a classifier needs at least 2 classes")
    return labels, model
