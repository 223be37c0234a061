"""`skinedge train` on a tiny synthetic ImageFolder: per-epoch train and validation figures, the best epoch
kept, early stopping, a frozen feature extractor in the head stage, class weights, augmentation, a held-out
split when no validation set is given, and an arch typo refused before any image is read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibration.synthetic import write_imagefolder
from convert.train import NO_AUGMENT, Augment, Fit, _backbones, _loss_fn, evaluate_batches, fit
from convert.zoo import build_model
from edge.cli import main

SIZE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from calibration.dataset import load_batch, scan

    root = tmp_path_factory.mktemp("train")
    data = write_imagefolder(root / "data", per_class=10, size=SIZE, seed=4)
    batch = load_batch(scan(data).samples, SIZE)
    return {"root": root, "data": data, "images": batch.images, "labels": batch.labels}


def test_cli_reports_every_epoch_and_keeps_the_best(tiny, capsys):
    out = tiny["root"] / "m.pth"
    assert main(["train", "--arch", "micro_mpoxnet", "--data", str(tiny["data"]), "--size", str(SIZE), "--epochs", "1",
                 "--freeze-epochs", "1", "--batch", "8", "--class-weights", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "on 32 images, validation on 8 (20% held out of --data)" in text  # 10 per class, 2 of each held out
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [e.split(":")[0] for e in epochs] == ["epoch  1/2 head", "epoch  2/2 fine-tune"]
    assert all("| val loss" in e and " acc " in e and " F1 " in e for e in epochs)
    ckpt = torch.load(out, weights_only=True)
    best = [i + 1 for i, e in enumerate(epochs) if e.endswith("* best")][-1]
    assert ckpt["epoch"] == best and ckpt["labels"] == ["inflammatory", "normal", "pigmented", "pox_like"]
    assert ckpt["validation"]["val_accuracy"] == pytest.approx(float(epochs[best - 1].split(" acc ")[2][:4]) / 100,
                                                               abs=0.01)
    model = build_model("micro_mpoxnet", 4)
    model.load_state_dict(ckpt["state_dict"])  # loads as convert will load it
    run = ckpt["training"]  # what the model card's training section says (convert carries it)
    assert run["best_epoch"] == best and run["epochs_run"] == run["epochs_planned"] == 2
    assert [h["epoch"] for h in run["history"]] == [1, 2] and run["history"][best - 1]["best"]
    assert run["train"]["per_class"] == dict.fromkeys(ckpt["labels"], 8)
    assert run["validation"]["per_class"] == dict.fromkeys(ckpt["labels"], 2)
    assert run["data"]["images"] == 40 and len(run["data"]["digest"]) == 64 and run["train"]["digest"] != \
        run["validation"]["digest"]
    assert run["augmentation"] == {"flip": True, "rotate": 30.0, "zoom": 0.2} and run["seed"] == 0
    assert run["init"] == "random" and torch.__version__.startswith(run["software"]["torch"])
    curves = out.with_suffix(".curves.png")
    assert f"training curves: {curves}" in text
    import cv2

    png = cv2.imread(str(curves))
    assert png is not None and png.shape[1] > 500 and png.std() > 10


def test_head_stage_leaves_the_feature_extractor_alone(tiny):
    model = build_model("mobilenet_v2", 4)  # a torchvision classifier
    before = {k: v.clone() for k, v in _backbones(model)[0].state_dict().items()}
    head_before = [p.clone() for p in model.classifier.parameters()]
    fit(model, tiny["images"], tiny["labels"], Fit(epochs=0, freeze_epochs=1, batch=16, progress=False))
    after = _backbones(model)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.classifier.parameters()))


def test_early_stopping_and_best_weights_restored(tiny):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE * 3, 4))
    val = (tiny["images"][:8], tiny["labels"][:8])
    frozen = Fit(epochs=6, lr=0.0, patience=2, batch=16, progress=False)  # lr 0: no epoch can do better
    history = fit(model, tiny["images"], tiny["labels"], frozen, val=val)
    assert len(history) == 3 and [r.best for r in history] == [True, False, False]
    learning = Fit(epochs=4, lr=0.05, patience=0, batch=16, augment=NO_AUGMENT, progress=False)
    history = fit(model, tiny["images"], tiny["labels"], learning, val=val)
    best = max(history, key=lambda r: (r.val_f1, -r.val_loss))
    assert len(history) == 4 and best.best
    restored = evaluate_batches(model, *val, torch.nn.CrossEntropyLoss(label_smoothing=0.05))
    assert restored[2] == pytest.approx(best.val_f1) and restored[0] == pytest.approx(best.val_loss, rel=1e-5)


def test_class_weights_are_inverse_frequency():
    loss = _loss_fn(np.array([0, 0, 0, 1]), 2, weighted=True)
    assert torch.allclose(loss.weight, torch.tensor([4 / 6, 2.0]))
    assert _loss_fn(np.array([0, 1]), 2, weighted=False).weight is None


def test_augmentation_warps_and_none_is_identity():
    x = torch.rand(4, 3, SIZE, SIZE)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(NO_AUGMENT(x, g), x, atol=1e-5)
    y = Augment(rotate=30, zoom=0.2)(x, g)
    assert y.shape == x.shape and not torch.allclose(y, x, atol=1e-2)


def test_arch_typo_is_refused_before_reading_images(tmp_path, capsys):
    # the data folder does not exist: the arch error comes first, so nothing was scanned or loaded
    assert main(["train", "--arch", "micro_mpoxnt", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'micro_mpoxnt'" in err and "Did you mean micro_mpoxnet" in err
