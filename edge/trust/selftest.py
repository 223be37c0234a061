"""The golden self-test: before the first frame, this board's backend must reproduce the workstation's
reference outputs on golden.npz — probabilities, logits and Grad-CAM maps — within the bundle's measured
per-artefact tolerances (manifest `tolerances`, written by convert/golden.py), and the manifest must still
mean what it meant when those outputs were computed: golden.npz records the label list and a digest of every
field that changes what a number means (edge/trust/meaning.py), so swapped labels or an edited preprocessing
are refused even where hashes were recomputed. This catches accidents and corrupted or mixed-up files; it is
no defence against intent (whoever can edit the manifest can recompute golden.npz too): that is the signature's
job (edge/trust/signing.py).

Four statistics, because each tampering hides from the others: max |dprob| (gross errors); the largest
per-class median shift of the centred logits (a bias added to one class moves every image by the same
amount, while honest kernel drift scatters around zero); the minimum and the median Grad-CAM correlation,
computed for the reference's own target class (a changed head.npz leaves the probabilities identical and
only the maps wrong); and top-1, which must agree wherever the reference margin exceeds the dprob tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.trust import meaning
from edge.trust.bundle import Bundle, BundleError
from edge.trust.npzfile import NpzError, load_npz

GOLDEN = "golden.npz"
RECONVERT = "re-convert the bundle with this skinedge (its golden file predates reference Grad-CAM maps and " \
            "measured tolerances)"


@dataclass
class Outputs:
    probs: np.ndarray  # (N, K)
    logits: np.ndarray  # (N, members, K)
    cams: np.ndarray  # (N, h, w), normalised


@dataclass(frozen=True)
class Drift:
    max_dprob: float
    logit_shift: float  # max over members and classes of |median over images of the centred-logit difference|
    cam_min: float
    cam_median: float


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float(np.array_equal(a, b))


def _centred(logits: np.ndarray) -> np.ndarray:
    return logits - logits.mean(axis=-1, keepdims=True)  # softmax ignores a common shift


def compare(got: Outputs, ref: Outputs) -> Drift:
    corr = np.array([pearson(a, b) for a, b in zip(got.cams, ref.cams)])
    return Drift(
        max_dprob=float(np.abs(got.probs - ref.probs).max()),
        logit_shift=float(np.abs(np.median(_centred(got.logits) - _centred(ref.logits), axis=0)).max()),
        cam_min=float(corr.min()),
        cam_median=float(np.median(corr)),
    )


def load_golden(bundle: Bundle, artefact: str | None = None) -> dict[str, np.ndarray]:
    """golden.npz with shape checks: `input` (N,H,W,3) uint8; for `artefact`, its probs (N,K), logits
    (N,members,K) and Grad-CAM maps (N,h,w)."""
    path = bundle.root / GOLDEN
    try:
        data = load_npz(path)
    except NpzError as e:
        raise BundleError(str(e)) from None
    x = data.get("input")
    h, w = bundle.input_size
    if x is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, 3):
        found = None if x is None else (x.shape, str(x.dtype))
        raise BundleError(f"{path}: input should be (N, {h}, {w}, 3) uint8, found {found}")
    if artefact is None:
        return data
    n, k, m = len(x), len(bundle.labels), len(bundle.members)
    if f"cam_{artefact}" not in data or f"logits_{artefact}" not in data:
        if f"probs_{artefact}" in data:
            raise BundleError(f"{path}: no reference Grad-CAM maps or logits for {artefact}: {RECONVERT}")
        raise BundleError(f"{path}: no reference outputs for {artefact}")
    for key, shape in ((f"probs_{artefact}", (n, k)), (f"logits_{artefact}", (n, m, k))):
        if data.get(key) is None or data[key].shape != shape:
            raise BundleError(f"{path}: {key} should be {shape}, found {getattr(data.get(key), 'shape', None)}")
    cams = data[f"cam_{artefact}"]
    if cams.ndim != 3 or len(cams) != n:
        raise BundleError(f"{path}: cam_{artefact} should be ({n}, h, w), found {cams.shape}")
    return data


def check_meaning(bundle: Bundle, golden: dict[str, np.ndarray]) -> None:
    """BundleError unless golden.npz's label list and meaning digest match the manifest."""
    path = bundle.root / GOLDEN
    if "labels" not in golden or "meaning" not in golden:
        raise BundleError(f"{path}: records no label list or meaning digest (made before they were checked): "
                          "re-convert, or re-measure it with python -m convert.golden")
    recorded = [str(x) for x in np.atleast_1d(golden["labels"])]
    if recorded != bundle.labels:
        i = next((i for i, (a, b) in enumerate(zip(recorded, bundle.labels)) if a != b), min(len(recorded),
                                                                                              len(bundle.labels)))
        here = repr(bundle.labels[i][:60]) if i < len(bundle.labels) else "missing"
        there = repr(recorded[i][:60]) if i < len(recorded) else "missing"
        raise BundleError(f"{path}: manifest.yaml's labels are not those the golden outputs were computed with "
                          f"(class {i} is {here} in the manifest, {there} in golden.npz): the manifest was edited "
                          "after conversion")
    if str(golden["meaning"]) != meaning.digest(bundle.manifest):
        raise BundleError(f"{path}: manifest.yaml's {', '.join(meaning.FIELDS[:-1])} or tolerances differ from what "
                          "the golden outputs were computed with (meaning digest): the manifest was edited after "
                          "conversion")


@dataclass(frozen=True)
class SelfTest:
    artefact: str
    n: int
    top1_required: int  # images whose reference margin exceeds the dprob tolerance
    top1_equal: int  # of those, how many agree
    drift: Drift
    tol: dict[str, float]
    max_dprob_vs_float: float
    note: str = ""  # how the artefact ran here, where it differs from the board's usual kernels (edge.backends)

    @property
    def failures(self) -> list[str]:
        d, t = self.drift, self.tol
        out = []
        if self.top1_equal < self.top1_required:
            out.append(f"top-1 differs on {self.top1_required - self.top1_equal} clear-cut image(s)")
        if d.max_dprob > t["dprob"]:
            out.append(f"max |dprob| {d.max_dprob:.4f} > {t['dprob']}")
        if d.logit_shift > t["logit_shift"]:
            out.append(f"a class's logits shifted by {d.logit_shift:.3f} > {t['logit_shift']} (systematic bias)")
        if d.cam_min < t["cam_corr"] or d.cam_median < t["cam_median"]:
            out.append(f"Grad-CAM maps differ (correlation min {d.cam_min:.3f}, median {d.cam_median:.3f}; "
                       f"limits {t['cam_corr']}, {t['cam_median']})")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        d, t = self.drift, self.tol
        verdict = "PASS" if self.ok else "FAIL (" + "; ".join(self.failures) + ")"
        return (f"{verdict} {self.artefact} on {self.n} golden images: top-1 {self.top1_equal}/{self.top1_required} "
                f"clear-cut as on the workstation, max |dprob| {d.max_dprob:.4f} (limit {t['dprob']}), class shift "
                f"{d.logit_shift:.3f} (limit {t['logit_shift']}), CAM correlation min {d.cam_min:.3f} / median "
                f"{d.cam_median:.3f} (limits {t['cam_corr']} / {t['cam_median']}), vs float model "
                f"{self.max_dprob_vs_float:.4f}" + (f"; {self.note}" if self.note else ""))


def selftest(bundle: Bundle, clf) -> SelfTest:
    """Run the classifier (edge.classify.Classifier) on the golden inputs and compare with the reference."""
    tol = (bundle.manifest.get("tolerances") or {}).get(clf.artefact)
    if tol is None:
        raise BundleError(f"{bundle.root}: manifest has no self-test tolerances for {clf.artefact}: {RECONVERT}")
    golden = load_golden(bundle, clf.artefact)
    check_meaning(bundle, golden)
    ref = Outputs(*(golden[f"{k}_{clf.artefact}"] for k in ("probs", "logits", "cam")))
    targets = ref.probs.argmax(1)
    res = [clf(img, target=int(t)) for img, t in zip(golden["input"], targets)]
    got = Outputs(np.array([r.probs for r in res]), np.array([r.logits for r in res]), np.array([r.cam for r in res]))
    if got.cams.shape != ref.cams.shape:
        raise BundleError(f"{bundle.root / GOLDEN}: cam_{clf.artefact} is {ref.cams.shape[1:]}, this model's maps "
                          f"are {got.cams.shape[1:]}")
    srt = np.sort(ref.probs, 1)
    clear = srt[:, -1] - srt[:, -2] > tol["dprob"]
    return SelfTest(
        artefact=clf.artefact,
        n=len(targets),
        top1_required=int(clear.sum()),
        top1_equal=int((got.probs.argmax(1) == targets)[clear].sum()),
        drift=compare(got, ref),
        tol=tol,
        max_dprob_vs_float=float(np.abs(got.probs - golden["probs_float"]).max()) if "probs_float" in golden
        else float("nan"),
        note=clf.note,
    )
