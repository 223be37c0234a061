"""`skinedge`: one entry point for the board (run, verify, bench, captures, demo) and the workstation
(synth, train, convert — imported lazily, so the board never loads torch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _convert(a: argparse.Namespace) -> int:
    from convert.export import preprocessing
    from convert.pipeline import ConvertError, Options, convert

    try:
        pre = preprocessing(a.preprocess, a.mean, a.std, a.channel_order, a.pixel_units)
    except ValueError as e:
        print(f"skinedge convert: error: {e}", file=sys.stderr)
        return 2
    opts = Options(
        arch=a.arch, calib=a.calib, val=a.val, out=a.out, checkpoint=a.checkpoint, random_init=a.random_init,
        trust_checkpoint=a.trust_checkpoint, labels=a.labels, preprocessing=pre,
        input_size=a.input_size, calib_method=a.calib_method, reduce_range=a.reduce_range, mixed_precision=a.mixed_precision,
        adaround=a.adaround, quark_python=a.quark_python,
        calib_per_class=a.calib_per_class, val_per_class=a.val_per_class, formats=tuple(a.formats.split(",")),
        name=a.name, force=a.force,
    )
    try:
        report = convert(opts)
    except ConvertError as e:
        print(f"skinedge convert: error: {e}", file=sys.stderr)
        return 2
    if report["warnings"] and a.strict:
        print("skinedge convert: --strict: refused (see the warnings above)", file=sys.stderr)
        return 3
    print(f"bundle written to {a.out}")
    return 0


def _verify(a: argparse.Namespace) -> int:
    from edge.backends import backend_list
    from edge.bundle import BundleError, load_bundle
    from edge.classify import Classifier
    from edge.selftest import selftest
    from edge.signing import Trust, short

    trust = _load_cfg(a.config, {}).trust if a.config else None
    if a.trusted_key:
        trust = Trust(tuple(Path(k).read_text().strip() if Path(k).is_file() else k for k in a.trusted_key), True)
    try:
        kinds = backend_list(a.backend)
        bundle = load_bundle(a.bundle, trust=trust)
        if bundle.signer:
            print(f"signature OK: {short(bundle.signer)}" + (" (a trusted key)" if trust and trust.keys else
                                                              " (no trusted key given: integrity only)"))
        print(f"hashes OK: {bundle.name} ({len(bundle.members)} model(s), labels {', '.join(bundle.labels)})")
        ok = True
        for kind in kinds:
            clf = Classifier(bundle, kind, threads=a.threads, precision=a.precision)
            res = selftest(bundle, clf)
            print(f"{clf.kind}: {res.line()}")
            ok &= res.ok
    except (BundleError, ValueError, RuntimeError) as e:
        print(f"skinedge verify: REFUSED: {e}", file=sys.stderr)
        return 2
    print("verdict: PASS" if ok else "verdict: FAIL")
    return 0 if ok else 1


def _keygen(a: argparse.Namespace) -> int:
    from edge.signing import SignatureError, keygen

    try:
        pub = keygen(a.out)
    except (SignatureError, OSError) as e:
        print(f"skinedge keygen: {e}", file=sys.stderr)
        return 2
    print(f"private key {a.out} (keep it on the workstation), public key {a.out}.pub:\n{pub}\n"
          f"pin it on the board: trusted_keys: ['{pub}'] and require_signature: true in its device config")
    return 0


def _sign(a: argparse.Namespace) -> int:
    from edge.bundle import BundleError, load_bundle
    from edge.signing import SIGNATURE, SignatureError, sign

    try:
        (a.bundle / SIGNATURE).unlink(missing_ok=True)  # a new signature replaces any earlier one
        load_bundle(a.bundle)  # sign only what would pass the board's own checks
        pub = sign(a.bundle, a.key)
    except (BundleError, SignatureError, OSError) as e:
        print(f"skinedge sign: {e}", file=sys.stderr)
        return 2
    print(f"signed {a.bundle} with {pub}")
    return 0


def _load_cfg(path: Path, overrides: dict):
    from edge.config import ConfigError, load_config

    try:
        return load_config(path, overrides)
    except ConfigError as e:
        raise SystemExit(f"skinedge: config error: {e}") from e


def _run(a: argparse.Namespace) -> int:
    from edge.config import display_overrides, source_overrides
    from edge.pipeline import Startup, run
    from edge.results import ResultsLog, check_results_path
    from edge.store import StoreError, StoreOnFirstCapture

    overrides = {}
    if a.bundle:
        overrides["bundle"] = str(a.bundle.resolve())
    if a.source:
        overrides.update(source_overrides(a.source))
    if a.display:
        overrides.update(display_overrides(a.display))
    if a.backend:
        overrides["backend"] = a.backend
    if a.threads:
        overrides["threads"] = a.threads
    cfg = _load_cfg(a.config, overrides)
    if a.results:
        try:
            check_results_path(a.results)
        except ValueError as e:
            raise SystemExit(f"skinedge run: {e}") from e
    results = ResultsLog(a.results, echo=cfg.source.kind == "folder")
    store = StoreOnFirstCapture(cfg.store.path) if (cfg.trigger.key or cfg.trigger.gpio_pin is not None) else None
    try:
        trigger = _gpio_trigger(cfg.trigger.gpio_pin) if cfg.trigger.gpio_pin is not None else None
        recorder = Recorder() if a.record else None
        stats = run(cfg, frames=a.frames, store=store, trigger=trigger, on_frame=recorder, on_record=results)
    except (Startup, StoreError) as e:
        print(f"skinedge run: {e}", file=sys.stderr)
        return 2
    finally:
        results.close()
        if store is not None:
            store.close()
    if recorder:
        recorder.save(a.record)
    print(stats.summary())
    if stats.frames == 0:  # e.g. a video file OpenCV opens but cannot decode
        print(f"skinedge run: {cfg.path}: the source ({cfg.source.kind} {cfg.source.path or cfg.source.device or ''}) "
              "gave no frame", file=sys.stderr)
        return 2
    for line in (results.summary(), f"results written to {a.results}" if a.results else None):
        if line:
            print(line)
    return 0


class Recorder:
    """--record: every frame's probabilities and Grad-CAM map, for comparing boards (e.g. ARM vs x86)."""

    def __init__(self):
        self.probs, self.cams = [], []

    def __call__(self, frame, result, overlay) -> None:
        import numpy as np

        self.probs.append(result.probs)
        self.cams.append(result.cam if result.cam is not None else np.zeros((1, 1), np.float32))

    def save(self, path: Path) -> None:
        import numpy as np

        np.savez(path, probs=np.array(self.probs), cams=np.array(self.cams))


def _gpio_trigger(pin: int):
    """A threading.Event set by a gpiozero button press (gpiozero is the pi extra)."""
    import threading

    try:
        from gpiozero import Button
    except ImportError as e:
        raise SystemExit(f"skinedge: trigger.gpio_pin={pin} needs gpiozero (pip install 'skinedge[pi]')") from e
    event = threading.Event()
    button = Button(pin)
    button.when_pressed = event.set
    event.button = button  # keep the Button alive as long as the event
    return event


def _demo(a: argparse.Namespace) -> int:
    from edge.pipeline import Startup, run

    assets = Path(__file__).parent / "demo_assets"
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = {"display.kind": "files", "display.path": str(out), "backend": a.backend}
    cfg = _load_cfg(assets / "demo.yaml", overrides)
    try:
        stats = run(cfg, frames=a.frames)
    except Startup as e:
        print(f"skinedge demo: {e}", file=sys.stderr)
        return 2
    print(f"demo: {cfg.backend} backend, overlays in {out}; {stats.summary()}")
    return 0


def _store_root(a: argparse.Namespace) -> Path:
    return a.store if a.store else Path(_load_cfg(a.config, {}).store.path)


def _captures(a: argparse.Namespace) -> int:
    from edge.export import PARTIAL, Interrupted, export_zip
    from edge.store import CaptureStore, StoreError

    try:
        with CaptureStore(_store_root(a), create=False) as store:
            if a.action == "list":
                caps = store.list(a.since)
                for c in caps:
                    print(f"{c.id}\t{c.created_utc}\t{c.label}\t{c.confidence:.2f}\t{c.bundle_hash[:12]}\t{c.note}")
                print(f"{len(caps)} capture(s) in {store.root}")
            elif a.action == "export":
                if not a.out:
                    raise ValueError("export needs --out FILE.zip")
                done = export_zip(store, a.out, a.since, force=a.force)
                for _, why in done.skipped:
                    print(f"skipped damaged {why}", file=sys.stderr)
                print(f"exported {len(done.exported)} capture(s) to {a.out}" + (
                    f"; PARTIAL: {len(done.skipped)} damaged capture(s) skipped, listed in index.csv"
                    if done.skipped else ""))
                return PARTIAL if done.skipped else 0
            else:
                problems = store.verify()
                print("\n".join(problems) if problems else f"store OK: {len(store.list())} capture(s), all files match")
                return 1 if problems else 0
    except (StoreError, ValueError) as e:
        print(f"skinedge captures: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"skinedge captures: {a.action} {e or 'interrupted'}; nothing written", file=sys.stderr)
        return 130
    return 0


def _capture(a: argparse.Namespace) -> int:
    """Scripted capture: classify one frame and keep it, or (--calib) save raw frames for calibration."""
    import cv2

    from edge.config import source_overrides
    from edge.overlay import Prediction, render
    from edge.pipeline import Startup, prepare
    from edge.preprocess import centre_crop, to_model_input
    from edge.sources import SourceError, open_source
    from edge.store import CaptureStore, StoreError

    overrides = source_overrides(a.source) if a.source else {}
    if a.bundle:
        overrides["bundle"] = str(a.bundle.resolve())
    cfg = _load_cfg(a.config, overrides)
    try:
        source = open_source(cfg.source)
    except SourceError as e:
        print(f"skinedge capture: {e}", file=sys.stderr)
        return 2
    try:
        frames = [f for f in (source.read() for _ in range(a.count)) if f is not None]
    finally:
        source.close()
    if not frames:
        print(f"skinedge capture: {cfg.path}: the source gave no frame", file=sys.stderr)
        return 2
    if a.calib:
        out = a.calib / a.label if a.label else a.calib
        out.mkdir(parents=True, exist_ok=True)
        start = len(list(out.glob("*.png")))
        for i, f in enumerate(frames):
            cv2.imwrite(str(out / f"calib_{start + i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        print(f"saved {len(frames)} calibration frame(s) to {out}")
        return 0
    try:
        clf, _ = prepare(cfg)
        h, w = clf.bundle.input_size
        with CaptureStore(a.store or cfg.store.path) as store:
            for f in frames:
                view = centre_crop(f, w / h)
                res = clf(to_model_input(view, (h, w)))
                overlay = render(view, res.cam, Prediction(clf.bundle.labels, res.probs), size=cfg.display.size,
                                 min_confidence=cfg.thresholds.min_confidence, fps=None)
                cap = store.add(view, overlay, res.probs, clf.bundle.labels, clf.bundle.digest, note=a.note)
                print(f"kept capture {cap.id}: {cap.label} {cap.confidence:.0%}")
    except (Startup, StoreError) as e:
        print(f"skinedge capture: {e}", file=sys.stderr)
        return 2
    return 0


def _bench(a: argparse.Namespace) -> int:
    import json

    from edge import bench

    try:
        if a.merge:
            if a.bundle or a.json:
                raise bench.BenchError("--merge takes report files only (no bundles); write with --md / --plot")
            reports = [bench.load_report(f) for f in a.merge]
        else:
            if not a.bundle:
                raise bench.BenchError("give one or more bundles, or --merge A.json B.json")
            jobs, skipped = bench.plan([str(b) for b in a.bundle], a.backend.split(","),
                                       a.precision.split(","), bench.int_list(a.threads, "--threads"), a.frames,
                                       a.warmup, a.gradcam, a.source)
            reports = [bench.run_jobs(jobs, skipped)]
            if a.fidelity:
                bench.add_fidelity(reports[0])
    except bench.BenchError as e:
        print(f"skinedge bench: error: {e}", file=sys.stderr)
        return 2
    if a.json:
        a.json.write_text(json.dumps(reports[0], indent=2))
    table = bench.markdown(reports)
    print(table)
    if a.md:
        a.md.write_text(table)
    if a.plot:
        print(f"plot written to {a.plot}" if bench.plot(reports, a.plot) else
              "no plot: matplotlib is not installed (pip install matplotlib)")
    return 0 if all("error" not in r for rep in reports for r in rep["results"]) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skinedge", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("convert", help="PyTorch checkpoint -> bundle (workstation; needs the convert extra)")
    c.add_argument("--arch", required=True, help="zoo name, torchvision classifier name, or package.module:factory")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", type=Path)
    g.add_argument("--random-init", action="store_true",
                   help="no checkpoint: random weights (testing the toolchain), or those a factory loads itself")
    c.add_argument("--trust-checkpoint", action="store_true", help="allow a full pickle (it can run code)")
    c.add_argument("--labels", help="class names in training order: comma-separated, or a file (one per line, or "
                   "JSON) (default: the --calib class folders, sorted; else the model's own)")
    c.add_argument("--calib", required=True, type=Path,
                   help="calibration images: a flat folder (unlabelled) or one sub-folder per class")
    c.add_argument("--val", required=True, type=Path, help="held-out validation images: a flat folder (unlabelled: "
                   "agreement only) or one sub-folder per class (a subset of the classes is fine)")
    c.add_argument("--preprocess", choices=["imagenet", "inception", "lite", "raw", "caffe"],
                   help="the model's normalisation (default imagenet): inception (x-127.5)/127.5, lite (x-127)/128, "
                   "raw x/255, caffe x-mean in BGR; baked into the graph")
    c.add_argument("--mean", type=float, nargs="+", help="per-channel mean (1 or 3 values, in the model's channel "
                   "order), in 0..1 units like torchvision's Normalize (0..255 with --pixel-units); overrides the preset")
    c.add_argument("--std", type=float, nargs="+", help="per-channel std, units as --mean; overrides the preset")
    c.add_argument("--pixel-units", action="store_true", help="--mean/--std are in 0..255 pixel units (e.g. 127 128)")
    c.add_argument("--channel-order", choices=["RGB", "BGR"], help="the model's channel order (default: the preset's, "
                   "RGB except caffe); the graph takes RGB and reorders")
    c.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    c.add_argument("--input-size", type=int, default=224)
    c.add_argument("--calib-method", default="percentile", choices=["minmax", "entropy", "percentile", "auto"])
    c.add_argument("--reduce-range", action="store_true", help="7-bit int8 ONNX weights: only for ONNX Runtime on an "
                   "x86 CPU without VNNI (costs accuracy; never for a Pi or Jetson)")
    c.add_argument("--mixed-precision", type=float, nargs="?", const=0.99, metavar="BAR",
                   help="if the int8 ONNX agrees with float on fewer than BAR of the calibration images (default "
                   "0.99), keep the convs that cost most in float, within >= 90%% int8 conv MACs and 1.2x size/latency")
    c.add_argument("--adaround", type=int, nargs="?", const=100, metavar="ITERATIONS",
                   help="round the int8 weights with AMD Quark's AdaRound (ITERATIONS per layer, default 100; minutes) "
                   "instead of to nearest; Quark runs in its own Python, see --quark-python")
    c.add_argument("--quark-python", metavar="PYTHON", help="a Python with amd-quark, onnx<=1.22, onnxruntime and torch "
                   "(default: $SKINEDGE_QUARK_PYTHON); Quark cannot share skinedge's onnx version")
    c.add_argument("--calib-per-class", type=int, default=32, help="images per class (in all, if unlabelled)")
    c.add_argument("--val-per-class", type=int, default=None, help="as --calib-per-class (default: all)")
    c.add_argument("--formats", default="fp32_onnx,int8_onnx,int8_tflite,fp32_tflite",
                   help="comma-separated artefacts to write (default: all)")
    c.add_argument("--name")
    c.add_argument("--force", action="store_true", help="replace an existing bundle")
    c.add_argument("--strict", action="store_true", help="exit 3 when a fidelity bar is missed")
    c.set_defaults(fn=_convert)

    s = sub.add_parser("synth", help="write a synthetic lesion ImageFolder tree", add_help=False)
    s.set_defaults(fn=None)
    t = sub.add_parser("train", help="train a zoo or torchvision model on an ImageFolder tree, with validation "
                                     "figures every epoch (workstation; needs the convert extra)", add_help=False)
    t.set_defaults(fn=None)

    v = sub.add_parser("verify", help="check a bundle's hashes and run its golden self-test on this board")
    v.add_argument("bundle", type=Path)
    v.add_argument("--backend", default="auto", help="comma-separated: tflite, onnx, tensorrt, auto")
    v.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    v.add_argument("--threads", type=int, default=2)
    v.add_argument("--config", type=Path, help="device config whose trusted_keys / require_signature apply")
    v.add_argument("--trusted-key", action="append",
                   help="require a signature by this public key (a .pub file or the 'ed25519:...' line); repeatable")
    v.set_defaults(fn=_verify)

    kg = sub.add_parser("keygen", help="new Ed25519 signing key: FILE (private, 0600) and FILE.pub (pin on boards)")
    kg.add_argument("--out", type=Path, required=True)
    kg.set_defaults(fn=_keygen)

    sg = sub.add_parser("sign", help="sign a bundle's manifest (which hashes every file) with a keygen private key")
    sg.add_argument("bundle", type=Path)
    sg.add_argument("--key", type=Path, required=True)
    sg.set_defaults(fn=_sign)

    r = sub.add_parser("run", help="the point-of-care loop: camera -> classify -> Grad-CAM -> display")
    r.add_argument("--config", required=True, type=Path, help="device config YAML (see device_configs/)")
    r.add_argument("--bundle", type=Path)
    r.add_argument("--source", help="picamera2 | device index | /dev/videoN | GStreamer pipeline | video file | image folder")
    r.add_argument("--display", help="window | null | /dev/fbN | framebuffer:PATH | folder or .mp4/.avi to write overlays to")
    r.add_argument("--backend", choices=["tflite", "onnx", "tensorrt", "auto"], help="override the config's backend")
    r.add_argument("--threads", type=int, help="override the config's thread count")
    r.add_argument("--frames", type=int, help="stop after N frames")
    r.add_argument("--record", type=Path, help="save every frame's probabilities and Grad-CAM map to this .npz")
    r.add_argument("--results", type=Path, help="per-frame results (source, time, top-3, uncertain, heat-map peak, "
                                                "true label for class sub-folders) to this .csv or .jsonl")
    r.set_defaults(fn=_run)

    b = sub.add_parser("bench", help="latency and FPS per bundle x backend x precision x threads; --merge tables "
                                     "across boards")
    b.add_argument("bundle", nargs="*", type=Path)
    b.add_argument("--backend", default="auto", help="comma-separated: tflite, onnx, tensorrt, auto")
    b.add_argument("--precision", default="int8", help="comma-separated: int8, fp32 (fp32: bare inference only, "
                                                      "for the int8 speed-up)")
    b.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4")
    b.add_argument("--frames", type=int, default=100, help="measured frames per configuration and phase")
    b.add_argument("--warmup", type=int, default=10, help="frames run before measuring")
    b.add_argument("--gradcam", action="store_true", help="Grad-CAM on every frame of the pipeline run")
    b.add_argument("--fidelity", action="store_true", help="add each artefact's agreement with the float model "
                                                         "and accuracy from the bundle's validation")
    b.add_argument("--source", help="video file, image folder or camera for the pipeline run (default: the demo clip)")
    b.add_argument("--json", type=Path, help="write the report here (merge it with reports from other boards)")
    b.add_argument("--md", type=Path, help="write the Markdown tables here")
    b.add_argument("--plot", type=Path, help="write a PNG bar chart here (needs matplotlib)")
    b.add_argument("--merge", nargs="+", type=Path, metavar="REPORT.json", help="merge reports from several boards")
    b.set_defaults(fn=_bench)

    cs = sub.add_parser("captures", help="list, export or verify the point-of-care capture store",
                        epilog="exit status: 0 ok; 1 verify found damage; 2 error (nothing written); 3 export "
                               "PARTIAL (damaged captures skipped, listed in index.csv); 130 interrupted")
    cs.add_argument("action", choices=["list", "export", "verify"])
    where = cs.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", type=Path, help="store directory")
    where.add_argument("--config", type=Path, help="device config whose store.path to use")
    cs.add_argument("--since", help="ISO date or time (UTC), e.g. 2026-11-01")
    cs.add_argument("--out", type=Path, help="ZIP file to write (export)")
    cs.add_argument("--force", action="store_true", help="export: replace an existing --out file")
    cs.set_defaults(fn=_captures)

    cp = sub.add_parser("capture", help="scripted capture: classify and keep frames, or --calib: save raw frames")
    cp.add_argument("--config", required=True, type=Path)
    cp.add_argument("--bundle", type=Path)
    cp.add_argument("--source")
    cp.add_argument("--store", type=Path, help="override the config's store.path")
    cp.add_argument("--count", type=int, default=1, help="frames to take")
    cp.add_argument("--note", default="", help="free text stored with the capture (no patient identifiers)")
    cp.add_argument("--calib", type=Path, help="save raw frames in DIR (or DIR/LABEL/) for calibrating with this camera")
    cp.add_argument("--label", help="class folder for --calib frames (default: none, DIR is an unlabelled folder)")
    cp.set_defaults(fn=_capture)

    d = sub.add_parser("demo", help="the whole pipeline on the shipped demo bundle and clip; no camera or display needed")
    d.add_argument("--out", type=Path, default=Path("skinedge-demo"), help="folder for the overlay frames")
    d.add_argument("--frames", type=int)
    d.add_argument("--backend", default="auto")
    d.set_defaults(fn=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["synth"]:
        from calibration.synthetic import main as synth_main

        return synth_main(argv[1:])
    if argv[:1] == ["train"]:
        from convert.train import main as train_main

        return train_main(argv[1:])
    a = build_parser().parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
