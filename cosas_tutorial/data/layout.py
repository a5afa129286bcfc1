"""The COSAS 2024 folder layout, shared by every data tier (synthetic, open-tissue, real COSAS).

<root>/COSAS24-TrainingSet/task{1,2}/<domain>/{image,mask}/<id>.png
<root>/COSAS24-TestSet/task{1,2}/<domain>/{image,mask}/<id>.png     (held-out domains, optional)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAIN_DIR = "COSAS24-TrainingSet"
TEST_DIR = "COSAS24-TestSet"
TASKS = ("task1", "task2")
TASK_TITLES = {"task1": "cross-organ", "task2": "cross-scanner"}
IMAGE_DIR = "image"
MASK_DIR = "mask"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

# Domain names of the real challenge; the synthetic tier reuses them so that code and tables
# read the same on every tier.
COSAS_TRAIN_DOMAINS = {
    "task1": ("colorectum", "pancreas", "stomach"),
    "task2": ("3d-1000", "kfbio-400", "teksqray-600p"),
}


@dataclass(frozen=True)
class Sample:
    """One image/mask pair of a COSAS-layout tree."""

    image: Path
    mask: Path
    task: str  # "task1" | "task2"
    domain: str  # e.g. "colorectum", "kfbio-400"
    split: str  # "train" (COSAS24-TrainingSet) | "test" (COSAS24-TestSet)

    @property
    def id(self) -> str:
        return self.image.stem

    @property
    def key(self) -> str:
        """Unique across a tree: split/task/domain/id."""
        return f"{self.split}/{self.task}/{self.domain}/{self.id}"


def split_dir(split: str) -> str:
    return {"train": TRAIN_DIR, "test": TEST_DIR}[split]


def pair_dirs(root: Path, split: str, task: str, domain: str) -> tuple[Path, Path]:
    """The image and mask folders of one domain."""
    base = Path(root) / split_dir(split) / task / domain
    return base / IMAGE_DIR, base / MASK_DIR
