"""Trains a small PyTorch CNN on a labelled mnist_variants dataset through random access and a DataLoader.

python examples/train_torch.py --epochs 3
python examples/train_torch.py --manual_dir /data/fashion --num_workers 2   # offline, from local files
python examples/train_torch.py --source tfds   # tfds.data_source itself (its workers are spawned)

The default source, `mnist_variants.data_sources.open`, reads the split once and holds it
decoded, so DataLoader workers may be forked (Linux's default); `tfds.data_source` reads
ArrayRecord in each worker, which needs `multiprocessing_context="spawn"` (see the README).
Needs `pip install 'mnist-variants[loaders]'` (torch).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import tensorflow_datasets as tfds
import torch
from torch import nn

from mnist_variants import data_sources


def source(split: str, args: argparse.Namespace) -> Sequence:
    """Random access to a split: dicts of `image` uint8 (28, 28, 1) and `label`."""
    prepare = {"download_config": tfds.download.DownloadConfig(manual_dir=args.manual_dir)}
    if args.source == "ours":
        return data_sources.open(args.dataset, split, data_dir=args.data_dir, download_and_prepare_kwargs=prepare)
    return tfds.data_source(
        args.dataset,
        split=split,
        # ArrayRecord in a folder of its own, as data_sources.open keeps it: in tfds.load's folder it would make
        # a later tfds.load of the dataset fail (a data_dir holds one file format per dataset version).
        data_dir=args.data_dir or data_sources.array_record_data_dir(),
        builder_kwargs={"file_format": "array_record"},
        download_and_prepare_kwargs=prepare,
    )


def loader(examples: Sequence, args: argparse.Namespace, training: bool) -> torch.utils.data.DataLoader:
    # tfds.data_source's workers must not be forked from this process, which has read ArrayRecord files.
    context = "spawn" if args.source == "tfds" and args.num_workers else None
    return torch.utils.data.DataLoader(
        examples,
        batch_size=args.batch_size,
        shuffle=training,
        num_workers=args.num_workers,
        multiprocessing_context=context,
        persistent_workers=args.num_workers > 0,
        generator=torch.Generator().manual_seed(args.seed),
        timeout=300 if args.num_workers else 0,
    )


def model(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * 5 * 5, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 28, 28, 1) -> float (n, 1, 28, 28) in [0, 1]; labels as int64."""
    return batch["image"].permute(0, 3, 1, 2).float() / 255.0, batch["label"].long()


def run_epoch(
    classifier: nn.Module, batches: torch.utils.data.DataLoader, optimizer: torch.optim.Optimizer | None
) -> tuple[float, float, int]:
    """Mean loss, accuracy and example count over one pass; trains if an optimizer is given."""
    classifier.train(optimizer is not None)
    total_loss, correct, count = 0.0, 0, 0
    with torch.set_grad_enabled(optimizer is not None):
        for batch in batches:
            images, labels = inputs(batch)
            logits = classifier(images)
            loss = nn.functional.cross_entropy(logits, labels)
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            count += len(labels)
    return total_loss / count, correct / count, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist_variants_fashion_mnist", help="a registered dataset with labels")
    parser.add_argument(
        "--data_dir",
        help="where TFDS keeps prepared datasets (default: data_sources.open's, data_sources.array_record_data_dir())",
    )
    parser.add_argument("--manual_dir", help="folder with the upstream files, to prepare without network")
    parser.add_argument("--source", choices=("ours", "tfds"), default="ours", help="data_sources.open or tfds's")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    train, test = source("train", args), source("test", args)
    if "label" not in train[0]:
        parser.error(f"{args.dataset} has no labels to train a classifier on")
    num_classes = tfds.builder(args.dataset, data_dir=args.data_dir).info.features["label"].num_classes
    classifier = model(num_classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    train_batches, test_batches = loader(train, args, training=True), loader(test, args, training=False)
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        loss, accuracy, count = run_epoch(classifier, train_batches, optimizer)
        seconds = time.perf_counter() - started
        print(
            f"epoch {epoch}: loss {loss:.4f}, accuracy {accuracy:.4f}, {count} examples in {seconds:.1f} s", flush=True
        )
    loss, accuracy, count = run_epoch(classifier, test_batches, optimizer=None)
    print(f"test: loss {loss:.4f}, accuracy {accuracy:.4f}, {count} examples")


if __name__ == "__main__":
    main()
