"""Finding a usable local copy of an upstream file: in the manual dir (the user's choice) or a cache (found).

A manual dir's copy is judged and used, or refused loudly (the user put it there). A
cache's copy is only used when it verifies; anything else there is passed over with a
line saying why. Where to look is locations.py's business, how to judge verification.py's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from etils import epath

from mnist_variants import locations, verification


@dataclasses.dataclass
class LocalCopies:
    """The local copies of one dataset's files, and what was found where, for error messages."""

    title: str  # the dataset's name for people ("Fashion-MNIST")
    registry: Mapping[str, verification.Registered]
    manual: locations.ManualDir
    cache_folders: Sequence[epath.Path]
    found: dict[str, verification.Verdict] = dataclasses.field(default_factory=dict)

    def find(self, name: str, browse_url: str) -> verification.Verdict | None:
        """The manual dir's copy of `name` (judged; refused loudly), else a verified copy from a cache."""
        verdict = self._in_manual_dir(name, browse_url) or self._in_cache(name, browse_url)
        if verdict:
            self.found[name] = verdict
        return verdict

    def _in_manual_dir(self, name: str, browse_url: str) -> verification.Verdict | None:
        registered = self.registry[name]
        for folder in self.manual.folders:
            for path in locations.candidates(folder, name):
                if path.is_file():
                    verdict = verification.judge(path, name, registered, self.title, browse_url)
                    print(f"Using local copy of {name}: {path} ({verdict.how})", flush=True)
                    return verdict
        return None

    def _in_cache(self, name: str, browse_url: str) -> verification.Verdict | None:
        registered = self.registry[name]
        for folder in self.cache_folders:
            for path in locations.candidates(folder, name):
                if not path.is_file():
                    continue
                try:
                    verdict = verification.judge(path, name, registered, self.title, browse_url)
                except ValueError as error:  # WrongFileError or MalformedFileError: skip it, and say so
                    print(f"Not using {path} from the keras cache: {error}", flush=True)
                    continue
                if verdict.verified:
                    print(f"Using {name} from the keras cache {folder} ({verdict.how})", flush=True)
                    return verdict
                print(f"Not using {path} from the keras cache: {verdict.how}", flush=True)
        return None

    def where_we_looked(self, all_names: Sequence[str]) -> str:
        """Which files the manual dir held, which it lacked, and where we looked, for a failure's message."""
        if self.manual.root is None:
            where = f"No manual dir was usable ({self.manual.problem})" if self.manual.problem else "No manual dir"
            return f"{where}. Offline: put the upstream files in a folder and pass it as the manual dir (README)."
        found = [name for name, verdict in self.found.items() if verdict.path.is_relative_to(self.manual.root)]
        lacking = [name for name in all_names if name not in found]
        looked = ", ".join(str(folder) for folder in (*self.manual.folders, *self.cache_folders))
        return (
            f"Manual dir {self.manual.root}: found {', '.join(found) or 'none of the files'};"
            f" missing {', '.join(lacking)} (looked for each under its upstream name and decompressed,"
            f" in {looked}). Copy the missing files there to prepare offline."
        )
