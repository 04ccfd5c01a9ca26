"""Registered checksums, in TFDS's checksums format (URL, size, sha256, file name), one file per dataset.

- `<name>.tsv`: every source URL of every upstream file, with the download's size and sha256
  (the same values as TFDS's own registry).
- `<name>.decompressed.tsv`: for gzipped upstream files whose decompressed content's digest is
  known, the upstream URL with the size and sha256 of its decompressed content and the
  decompressed file name, so that a decompressed or recompressed copy can be verified.

A package only so that it installs as `mnist_variants.checksums` inside the wheel.
"""
