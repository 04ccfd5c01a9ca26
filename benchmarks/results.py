"""A benchmark's result table: printed as Markdown, and written with --markdown FILE and --json FILE.

docs/performance.md takes its tables from this output, pasted whole, so a figure on the page is never
retyped. The first line says when, on what machine and by which command the figures were measured.
"""

from __future__ import annotations

import argparse
import datetime
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
    """The machine in one line: CPU model, cores, load, Python (the page needs it beside every figure)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} cores{load}, Python {platform.python_version()}"


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
