"""Board Grad-CAM (numpy, from the ONNX `features` output and head.npz) equals pytorch-grad-cam's GradCAM
on the torch model with the same target layer, for every zoo architecture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from convert.export import FeatureTap, export_onnx, head_arrays
from convert.validate import pearson
from convert.zoo import ARCHS, SplitModel, build_model, split_model
from edge import gradcam
from edge.backends.onnx import OnnxBackend

SIZE = 64


# The ensemble's members are zoo archs built by build_model (convert/zoo/registry.py), each checked here on its
# own; how their maps are combined: test_ensemble_cam_is_weighted_average_on_finest_grid.
@pytest.mark.parametrize("arch", sorted(a for a in ARCHS if a != "ensemble"))
def test_board_gradcam_equals_pytorch_grad_cam(arch, tmp_path):
    from calibration.synthetic import CLASSES, render

    rng = np.random.default_rng(0)
    images = [render(CLASSES[i % len(CLASSES)], rng, SIZE)[0] for i in range(3)]
    informative = 0
    torch.manual_seed(0)
    split = split_model(build_model(arch, 4).eval())
    tap = FeatureTap(split).eval()
    onnx_path = export_onnx(tap, (SIZE, SIZE), tmp_path / "m.onnx")
    np.savez(tmp_path / "h.npz", **head_arrays(split.head))
    head = gradcam.load_head(tmp_path / "h.npz")
    backend = OnnxBackend(onnx_path, artefact="fp32_onnx")
    ref_model = SplitModel(split).eval()
    with GradCAM(model=ref_model, target_layers=[ref_model.features]) as cam_ref:
        for img in images:
            logits, features = backend.run(img)
            ours, target = gradcam.gradcam(features, head)
            assert target == int(np.argmax(logits))
            x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() * tap.scale + tap.shift)
            ref = cam_ref(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
            ours_up = cv2.resize(gradcam.normalise(ours).astype(np.float32), (SIZE, SIZE))
            if ref.max() == 0:  # ReLU removed everything: both must be empty
                assert ours.max() <= 1e-6 * max(1.0, np.abs(features).max())
                continue
            informative += 1
            r = pearson(ours_up, ref)
            assert r >= 0.999, f"{arch}: Pearson {r:.5f}"
    assert informative > 0, "every map was empty: the test proved nothing"


def test_head_gradient_matches_autograd_for_every_layer_kind():
    """A head with every supported layer kind: numpy forward/backward equals torch autograd."""
    torch.manual_seed(1)
    head = torch.nn.Sequential(
        torch.nn.Linear(16, 12), torch.nn.BatchNorm1d(12), torch.nn.ReLU(), torch.nn.Dropout(0.3),
        torch.nn.Linear(12, 10), torch.nn.SiLU(), torch.nn.Linear(10, 8), torch.nn.Hardswish(),
        torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 8), torch.nn.ReLU6(), torch.nn.Linear(8, 3),
    )
    for m in head:
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    head.eval()
    h = gradcam.head_from_arrays(head_arrays(head))
    for seed in range(5):
        p = torch.randn(16, generator=torch.Generator().manual_seed(seed)) * 3
        p.requires_grad_(True)
        y = head(p[None])[0]
        y[1].backward()
        logits, grad, _target = gradcam.head_logits_and_grad(h, p.detach().numpy(), 1)
        np.testing.assert_allclose(logits, y.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_ensemble_cam_is_weighted_average_on_finest_grid():
    a = np.zeros((2, 2), np.float32)
    a[0, 0] = 1
    b = np.zeros((4, 4), np.float32)
    b[3, 3] = 2
    out = gradcam.combine([a, b], [0.25, 0.75])
    assert out.shape == (4, 4)
    assert out[3, 3] == pytest.approx(0.75 + 0.25 * cv2.resize(a, (4, 4))[3, 3])
    assert out.max() <= 1.0


def test_bad_head_file_names_the_file(tmp_path):
    bad = tmp_path / "head.npz"
    np.savez(bad, layers=np.array(["linear", "relu", "linear"]), w0=np.ones((4, 8)), b0=np.ones(4),
             w2=np.ones((3, 5)), b2=np.ones(3))
    with pytest.raises(ValueError, match="head.npz.*inconsistent"):
        gradcam.load_head(bad)
    with pytest.raises(ValueError, match="not a valid head file"):
        gradcam.load_head(tmp_path / "missing.npz")
