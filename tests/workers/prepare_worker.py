"""One worker of the many-workers tests: gets a dataset the way a training job does, reports what it sees.

    python prepare_worker.py NAME --data_dir D [--manual_dir M] [--api load|builder] [--threads N] [--no_lock]

The last line printed is `RESULT {json}`: the split sizes and a sha256 of every example of
every split, read both with `as_dataset` and with `batch_size=-1`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading

import numpy as np
import registered_dummies  # noqa: F401 - the test's sources and checksums
import tensorflow_datasets as tfds

from mnist_variants import locking


def digest(splits: dict[str, dict[str, np.ndarray]]) -> str:
    """One sha256 over every feature array of every split, in a fixed order."""
    sha = hashlib.sha256()
    for split in sorted(splits):
        for feature in sorted(splits[split]):
            sha.update(f"{split}/{feature}".encode())
            sha.update(np.ascontiguousarray(splits[split][feature]).tobytes())
    return sha.hexdigest()


def get(args: argparse.Namespace) -> dict:
    config = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
    if args.api == "load":
        batches, info = tfds.load(
            args.name,
            data_dir=args.data_dir,
            batch_size=-1,
            with_info=True,
            download_and_prepare_kwargs={"download_config": config},
        )
        whole = {split: tfds.as_numpy(batch) for split, batch in batches.items()}
    else:
        builder = tfds.builder(args.name, data_dir=args.data_dir)
        builder.download_and_prepare(download_config=config)
        info = builder.info
        whole = {split: tfds.as_numpy(builder.as_dataset(split, batch_size=-1)) for split in info.splits}
        one_by_one = {}
        for split in info.splits:
            examples = list(tfds.as_numpy(builder.as_dataset(split, shuffle_files=False)))
            one_by_one[split] = {feature: np.stack([e[feature] for e in examples]) for feature in examples[0]}
        assert digest(one_by_one) == digest(whole), "as_dataset and batch_size=-1 disagree"
    sizes = {split: info.splits[split].num_examples for split in info.splits}
    assert sizes == {split: len(next(iter(arrays.values()))) for split, arrays in whole.items()}
    return {"splits": sizes, "digest": digest(whole)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--manual_dir")
    parser.add_argument("--api", choices=("load", "builder"), default="load")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no_lock", action="store_true", help="behave as on a filesystem without locks")
    args = parser.parse_args()
    if args.no_lock:
        locking.supports_locking = lambda path: False
    results: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(get(args))
        except BaseException as error:  # noqa: BLE001 - reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    assert all(result == results[0] for result in results), results
    print("RESULT " + json.dumps(results[0]), flush=True)


if __name__ == "__main__":
    main()
