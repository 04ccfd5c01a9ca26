"""Finding a usable local copy of an upstream file: in the manual dir (the user's choice) or a cache (found).

A manual dir's copy is judged and used, or refused loudly (the user put it there). A
cache's copy is only used when it verifies; anything else there is passed over with a
line saying why. A copy that cannot be read at all (permission, I/O error, a directory
under the file's name) is passed over wherever it is: the file can still come from
elsewhere, and if nothing is left, the failure lists each copy passed over and why.
Where to look is locations.py's business, how to judge verification.py's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from etils import epath

from mnist_variants import formats, locations, verification


@dataclasses.dataclass
class LocalCopies:
    """The local copies of one dataset's files, and what was found where, for error messages."""

    title: str  # the dataset's name for people ("Fashion-MNIST")
    registry: Mapping[str, verification.Registered]
    manual: locations.ManualDir
    cache_folders: Sequence[epath.Path]
    split_files: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)  # split -> role -> name
    known: verification.Known = dataclasses.field(default_factory=verification.Known)  # the family's digests
    found: dict[str, verification.Verdict] = dataclasses.field(default_factory=dict)
    passed_over: list[str] = dataclasses.field(default_factory=list)  # "Not using PATH: why", one per copy

    def find(self, name: str, browse_url: str) -> verification.Verdict | None:
        """The manual dir's copy of `name` (judged; refused loudly), else a verified copy from a cache.

        The verdict carries the bytes that were verified (`data`): parse those, not the path.
        """
        return self.in_manual_dir(name, browse_url) or self.in_cache(name, browse_url)

    def in_manual_dir(self, name: str, browse_url: str) -> verification.Verdict | None:
        """The manual dir's copy of `name`: judged, and used or refused loudly (the user put it there)."""
        registered = self.registry[name]
        for folder in self.manual.folders:
            for path in locations.candidates(folder, name):
                try:
                    verdict = verification.judge(path, name, registered, self.title, browse_url, known=self.known)
                except FileNotFoundError:
                    continue
                except verification.UnreadableCopyError as error:
                    self._pass_over(f"Not using {path}: {error.strerror}")
                    continue
                print(f"Using local copy of {name}: {path} ({verdict.how})", flush=True)
                self._remember(verdict)
                return verdict
        return None

    def in_cache(
        self, name: str, browse_url: str, folders: Sequence[epath.Path] | None = None
    ) -> verification.Verdict | None:
        """A verified copy of `name` from the keras cache (or `folders`); anything else there is passed over."""
        registered = self.registry[name]
        for folder in self.cache_folders if folders is None else folders:
            for path in locations.candidates(folder, name):
                try:
                    verdict = verification.judge(
                        path, name, registered, self.title, browse_url, unverified_ok=False, known=self.known
                    )
                except FileNotFoundError:
                    continue
                except verification.UnreadableCopyError as error:
                    self._pass_over(f"Not using {path} from the keras cache: {error.strerror}")
                    continue
                except ValueError as error:  # WrongFileError or MalformedFileError: skip it, and say so
                    self._pass_over(f"Not using {path} from the keras cache: {error}")
                    continue
                if verdict.verified:
                    print(f"Using {name} from the keras cache {folder} ({verdict.how})", flush=True)
                    self._remember(verdict)
                    return verdict
                self._pass_over(f"Not using {path} from the keras cache: {verdict.how}")
        return None

    def keras_npz(self, npz: locations.KerasNpz, browse_url: str) -> dict[str, verification.Verdict]:
        """The files a verified keras `.npz` holds, by upstream name, each as IDX bytes of its array.

        The archive is read once and verified like any cached copy; its arrays are read strictly
        and written out as the IDX files they stand for, so the same strict parsers read them and
        the examples are the very same as from upstream's files.
        """
        if npz.filename not in self.registry:
            return {}
        verdict = self.in_cache(npz.filename, browse_url, locations.keras_cache(npz.folder))
        if verdict is None:
            return {}
        keys = [key for roles in npz.arrays.values() for key in roles.values()]
        arrays = formats.read_npz(verdict.data, verdict.path, keys)
        files = {}
        for split, roles in npz.arrays.items():
            for role, key in roles.items():
                name = self.split_files[split][role]
                how = f"verified: array {key} of keras's {npz.filename}"
                member = epath.Path(f"{verdict.path}[{key}]")
                files[name] = verification.Verdict(member, name, True, how, formats.encode_idx(arrays[key]))
                print(f"Using {name} from the keras cache ({how})", flush=True)
        for verdict in files.values():
            self._remember(verdict)
        return files

    def _remember(self, verdict: verification.Verdict) -> None:
        """What was found where, for messages; without its bytes (an archive's are hundreds of MB)."""
        self.found[verdict.name] = dataclasses.replace(verdict, data=b"")

    def pass_over_extracted(self, archive: locations.Archive, names: Sequence[str]) -> None:
        """Members of `archive` found extracted in the manual dir (a folder, torchvision's `EMNIST/raw/`) are not
        used, and this says so: no digest of a member is known, so nothing shows they are upstream's."""
        for folder in self.manual.folders:
            for place in (folder, folder / archive.folder.strip("/")) if archive.folder else (folder,):
                try:
                    paths = [path for name in names for path in locations.candidates(place, name)]
                    found = [path.name for path in paths if path.is_file()]
                except OSError:  # a folder we may not list: nothing of it is used either way
                    continue
                if found:
                    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
                    self._pass_over(
                        f"Not using {shown} in {place}: files extracted from {archive.filename}, and no digest of"
                        f" {self.title}'s members is known, so they cannot be verified. Put {archive.filename}"
                        " itself in the manual dir (it is verified by its sha256)."
                    )

    def _pass_over(self, note: str) -> None:
        """Says now why a copy is not used, and keeps it for the message if nothing else delivers the file."""
        note = re.sub(r"\s*\n\s*", " ", note)  # one line each, whatever the error's layout
        print(note, flush=True)
        self.passed_over.append(note)

    def where_we_looked(self, all_names: Sequence[str]) -> str:
        """Which files the manual dir held, which it lacked, where we looked, and each copy passed over and why."""
        caches = ", ".join(str(folder) for folder in self.cache_folders)
        if self.manual.root is None:
            where = f"No manual dir: {self.manual.problem}" if self.manual.problem else "No manual dir"
            summary = (
                f"{where}. Keras cache: {caches or 'none'}. Offline: put the upstream files in a folder and"
                " pass it as the manual dir (README)."
            )
        else:
            found = [name for name, verdict in self.found.items() if verdict.path.is_relative_to(self.manual.root)]
            lacking = [name for name in all_names if name not in found]
            looked = ", ".join(str(folder) for folder in (*self.manual.folders, *self.cache_folders))
            summary = (
                f"Manual dir {self.manual.root}: found {', '.join(found) or 'none of the files'};"
                f" missing {', '.join(lacking)} (looked for each under its upstream name and decompressed,"
                f" in {looked}). Copy the missing files there to prepare offline."
            )
        return "\n".join([summary, *self.passed_over])
