"""Registered URL checksums, one TFDS checksums file per dataset.

A package only so that it installs as `mnist_variants.checksums` inside the wheel.
"""
