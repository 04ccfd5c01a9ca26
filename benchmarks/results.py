"""A benchmark's result table: printed as Markdown, and written with --markdown FILE and --json FILE.

docs/performance.md takes its tables from this output, pasted whole, so a figure on the page is never
retyped. The first line says when, on what machine and by which command the figures were measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", type=Path, help="also write the result tables to this Markdown file")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def machine() -> str:
    """The machine in one line: CPU model, cores, memory, load average, Python, TensorFlow and TFDS versions
    (the page puts it on every table; the versions come from the installed distributions' metadata, so
    TensorFlow is not imported for them)."""
    model = platform.processor() or platform.machine()
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / (1 << 20):.1f} GiB memory"
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    versions = []
    for distribution in ("tensorflow", "tensorflow-datasets"):
        try:
            versions.append(f"{distribution} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{distribution} not installed")
    return f"{model}, {os.cpu_count()} cores{memory}{load}, Python {platform.python_version()}, {', '.join(versions)}"


class Results:
    """The tables of one run, in order; each is printed when added and all are written at the end."""

    def __init__(self, benchmark: str) -> None:
        self.heading = (
            f"`{benchmark} {shlex.join(sys.argv[1:])}`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
            f" UTC, {machine()}"
        )
        self.tables: list[dict] = []

    def table(self, title: str, columns: list[str], rows: list[list[str]], figures: object = None) -> None:
        """One Markdown table (cells already formatted) and, for JSON, the raw figures behind it."""
        self.tables.append({"title": title, "columns": columns, "rows": rows, "figures": figures})
        print(f"\n{self.markdown_table(self.tables[-1])}", flush=True)

    @staticmethod
    def markdown_table(table: dict) -> str:
        lines = [table["title"], "", "| " + " | ".join(table["columns"]) + " |", "|" + "---|" * len(table["columns"])]
        lines += ["| " + " | ".join(row) + " |" for row in table["rows"]]
        return "\n".join(lines) + "\n"

    def write(self, args: argparse.Namespace) -> None:
        """Writes what --markdown and --json ask for."""
        if args.markdown:
            text = "\n".join([self.heading, "", *(self.markdown_table(table) for table in self.tables)])
            args.markdown.write_text(text)
            print(f"wrote {args.markdown}")
        if args.json:
            args.json.write_text(json.dumps({"run": self.heading, "tables": self.tables}, indent=1) + "\n")
            print(f"wrote {args.json}")
