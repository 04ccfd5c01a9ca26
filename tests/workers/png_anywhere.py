"""Encodes with the PNG helper from an unusual setup and checks the bytes; for tests/test_png.py.

    python [-I|-P] png_anywhere.py [--path DIR] [--png FILE] [--frozen] [--gone-cwd]

--path DIR is put first on sys.path at run time (as pip --target, pex, Bazel do), --png loads
mnist_variants/png.py from FILE (else `import mnist_variants.png`, e.g. from a zipapp), --frozen
sets sys.frozen as PyInstaller and cx_Freeze do, --gone-cwd works in a working directory that was
removed (a job whose scratch folder was cleaned up). Prints `HELPER yes|no` and `OK`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path")
    parser.add_argument("--png")
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
    if args.png:
        spec = importlib.util.spec_from_file_location("png_under_test", args.png)
        png = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(png)
    else:
        from mnist_variants import png
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (2100, 28, 28), dtype=np.uint8)
    encoder = png.PngEncoder()
    first, second = encoder.submit(images[:2000]), encoder.submit(images[2000:])
    encoder.close()
    encoded = list(second) + list(first)
    assert encoded == png.encode_batch(images[2000:]) + png.encode_batch(images[:2000])
    print("HELPER", "no" if encoder._here else "yes", flush=True)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
