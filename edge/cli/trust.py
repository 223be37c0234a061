"""`skinedge verify`, `keygen`, `sign`: what a board trusts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.common import load_cfg, threads, warn


def _verify(a: argparse.Namespace) -> int:
    from edge.backends import backend_list
    from edge.backends.cpu import check_threads
    from edge.classify import Classifier
    from edge.trust.admit import admit
    from edge.trust.bundle import BundleError
    from edge.trust.rollback import VersionBook
    from edge.trust.selftest import selftest
    from edge.trust.signing import Trust, read_public_key, short

    cfg = load_cfg(a.config, {}) if a.config else None
    trust = cfg.trust if cfg else Trust()
    try:
        if a.trusted_key:
            trust = Trust(tuple(read_public_key(k) for k in a.trusted_key), True)
        kinds = backend_list(a.backend)
        # with --config, the version is checked against the board's state as `run` would (nothing is recorded)
        bundle, model = admit(a.bundle, trust, VersionBook(cfg.state_dir) if cfg else None)
        if bundle.signer:
            print(f"signature OK: {short(bundle.signer)}" + (" (a trusted key)" if trust.keys else
                                                              " (no trusted key given: integrity only)"))
        else:
            print("UNSIGNED: no signature (a board runs it only with allow_unsigned: true in its config)")
        print(f"hashes OK: {bundle.name} {model.version} ({len(bundle.members)} model(s), labels "
              f"{', '.join(bundle.labels)})")
        warn(check_threads(a.threads, "--threads"))
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
    from edge.trust.signing import SignatureError, keygen

    try:
        pub = keygen(a.out)
    except (SignatureError, OSError) as e:
        print(f"skinedge keygen: {e}", file=sys.stderr)
        return 2
    print(f"private key {a.out} (keep it on the workstation), public key {a.out}.pub:\n{pub}\n"
          f"pin it on the board: trusted_keys: ['{pub}'] and require_signature: true in its device config")
    return 0


def _sign(a: argparse.Namespace) -> int:
    from edge.trust.bundle import BundleError, load_bundle
    from edge.trust.signing import SignatureError, key_id, sign

    try:
        # sign only what passes the board's checks; an earlier signature stays until the new one replaces it
        bundle = load_bundle(a.bundle, check_signature=False)
        pub = sign(a.bundle, a.key)
    except (BundleError, SignatureError, OSError) as e:
        print(f"skinedge sign: {e}", file=sys.stderr)
        return 2
    print(f"signed {a.bundle} ({bundle.name} {bundle.manifest['version']}) with {pub} ({key_id(pub)})")
    return 0


def add_parsers(sub) -> None:
    v = sub.add_parser("verify", help="check a bundle's hashes and run its golden self-test on this board")
    v.add_argument("bundle", type=Path)
    v.add_argument("--backend", default="auto", help="comma-separated: tflite, onnx, tensorrt, auto")
    v.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    v.add_argument("--threads", type=threads, default=2, help="1..4 x cores")
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
