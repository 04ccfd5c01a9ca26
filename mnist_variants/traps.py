"""What stands under a data file's name when it is not a data file, recognised by its first bytes.

A clone made without git-lfs holds small Git LFS pointer files under the upstream
names; proxies, captive portals and expired links answer with an HTML page and
status 200. Calling them by their name beats "sha256 mismatch" or "bad IDX magic".
"""

from __future__ import annotations

GIT_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
SNIFF_BYTES = 512


def recognise(head: bytes) -> str | None:
    """'a Git LFS pointer', 'an HTML page' or None, from a file's first bytes (SNIFF_BYTES suffice)."""
    if head.startswith(GIT_LFS_POINTER):
        return "a Git LFS pointer"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(HTML_STARTS):
        return "an HTML page"
    return None


def advice(trap: str, url: str) -> str:
    """What to do instead, for a trap `recognise` named."""
    if trap == "a Git LFS pointer":
        return f"Run `git lfs pull` in that clone (needs git-lfs), or download the real file from {url}."
    return f"It is not the data file; download it from {url} with a browser or another network, and check the proxy."
