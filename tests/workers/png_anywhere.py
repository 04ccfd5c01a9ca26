"""Encodes with the PNG helper from an unusual setup and checks the bytes; for tests/test_png.py.

    python [-I|-P] png_anywhere.py [--path DIR] [--package DIR] [--frozen] [--gone-cwd]

--path DIR is put first on sys.path at run time (as pip --target, pex, Bazel do), --package loads
mnist_variants' encoder modules from DIR without the package's __init__, which needs TFDS (else
`import mnist_variants.png_encoder`, e.g. from a zipapp whose __init__ is empty), --frozen
sets sys.frozen as PyInstaller and cx_Freeze do, --gone-cwd works in a working directory that was
removed (a job whose scratch folder was cleaned up). Prints `HELPER yes|no` and `OK`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import types


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path")
    parser.add_argument("--package")
    parser.add_argument("--frozen", action="store_true")
    parser.add_argument("--gone-cwd", action="store_true")
    args = parser.parse_args()
    if args.gone_cwd:
        gone = tempfile.mkdtemp(prefix="png-anywhere-cwd-")
        os.chdir(gone)
        os.rmdir(gone)
    if args.path:
        sys.path.insert(0, args.path)
    if args.frozen:
        sys.frozen = True
    if args.package:  # a stand-in package whose modules are found in DIR; its __init__ is not run
        package = types.ModuleType("mnist_variants")
        package.__path__ = [args.package]
        sys.modules["mnist_variants"] = package
    png_encoder = importlib.import_module("mnist_variants.png_encoder")
    png = importlib.import_module("mnist_variants.png_codec")
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (2100, 28, 28), dtype=np.uint8)
    encoder = png_encoder.PngEncoder()
    first, second = encoder.submit(images[:2000]), encoder.submit(images[2000:])
    encoder.close()
    encoded = list(second) + list(first)
    assert encoded == png.encode_batch(images[2000:]) + png.encode_batch(images[:2000])
    print("HELPER", "no" if encoder._here else "yes", flush=True)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
