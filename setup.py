"""Packaging for mnist_variants; the registered checksums ship inside the package."""

from setuptools import setup

setup(
    name="mnist-variants",
    version="1.0.0",
    description=(
        "TensorFlow Datasets builders for Binarized MNIST, Fashion-MNIST, MNIST, Kuzushiji-MNIST, EMNIST, MNIST-C"
        " and QMNIST: TFDS's built-ins' examples pixel for pixel, verified, offline-capable, resumable, fast."
    ),
    # The README is the guide; its links into docs/ are relative to the repository (no public URL to make them
    # absolute: the repository has no remote).
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["mnist_variants", "mnist_variants.datasets", "mnist_variants.checksums"],
    # Top-level checksums/ is installed as mnist_variants/checksums/, where the builders look.
    package_dir={"mnist_variants.checksums": "checksums"},
    package_data={"mnist_variants.checksums": ["*.tsv"]},
    install_requires=[
        # The lowest versions here are tested too: .ci/minimum-versions.txt (TF 2.16.1 is the first 2.16 release).
        "tensorflow>=2.16.1",
        "tensorflow-datasets>=4.9.4,<5",
        "numpy>=1.24",
        # tensorflow-datasets needs these but does not declare them (measured in a fresh venv).
        "importlib_resources",
        # Imported directly by mnist_variants.
        "absl-py",
        "etils[epath]",
        "promise",
        "requests>=2.31",
        "urllib3>=2.3",  # HTTPResponse.read1 (mnist_variants/http_transport.py)
        # Deflates the PNGs 3.6x faster than zlib (mnist_variants/png_codec.py), inflates the gzip files about 2x
        # faster (mnist_variants/formats.py). 0.5: wheels for Linux, macOS (arm64 too) and Windows.
        "zlib-ng>=0.5",
        # One worker prepares a dataset, the others wait (mnist_variants/preparation.py).
        "filelock>=3.12",
        # tfds.data_source decodes images with OpenCV or PIL and fails with neither (README "Use").
        "pillow",
    ],
    extras_require={
        # The `tfds` command line of TFDS 4.9.10 imports these at start-up.
        "cli": ["apache-beam", "mlcroissant"],
        # dill: tfds.testing imports it without declaring it.
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "hypothesis>=6", "pillow", "ruff==0.17.6", "dill"],
        # examples/show.py draws its grid with matplotlib; examples/compare_classifiers.py fits scikit-learn's.
        "examples": ["matplotlib", "scikit-learn"],
        # PyTorch's DataLoader and Grain over random access (README "PyTorch and JAX"); OpenCV doubles the
        # speed of tfds.data_source's own decoding, which fails with neither it nor PIL installed.
        "loaders": ["torch>=2.0", "grain>=0.2.18", "jax", "opencv-python-headless"],
    },
    classifiers=[
        "Intended Audience :: Science/Research",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX :: Linux",  # where CI runs; the tests use Linux's /proc, flock and mounts
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
