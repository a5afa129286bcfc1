"""The synthetic tier: procedural H&E-like tiles with tumour masks, written in the COSAS layout.

A tile is tissue painted as stain concentrations (:mod:`cosas_tutorial.data.tissue`) and
rendered by a scanner model (:mod:`cosas_tutorial.data.acquisition`). Each domain has a profile
(:func:`domain_profile`): a morphology and an acquisition.

* Task 1 (cross-organ): the organs differ mainly in morphology (gland size, shape, density,
  mucin, stroma, and the numbers of their glandular carcinoma). Each organ, the two unseen ones
  included, has a scanner of its own; the five lie close together (one lab, :data:`ORGAN_LAB`)
  and none of them is REFERENCE or one of task 2's scanners.
* Task 2 (cross-scanner): breast tissue with its own recipe (lobules, fat, and
  :class:`~cosas_tutorial.data.tissue.BreastCarcinoma`: nests, tubules and cords, not the
  organs' glands) under six scanners that differ in acquisition (stain vectors, colour
  response, blur, noise, JPEG).
* ``shift`` in [0, 1] moves every domain from its task's reference (the mean training organ and
  ORGAN_LAB; breast under REFERENCE) towards its own profile: at 0 all domains of a task are
  draws from the same distribution, at 1 they lie furthest apart. The two tasks stay apart at
  every shift. A fifth of the tiles are tumour-free.

Neutral towards the training strategies by construction: nothing that union or cross-task
training adds from the other task previews an unseen domain more than the task's own training
domains do. The two tasks' tissue and tumours follow different recipes. On every acquisition
parameter (each stain-vector component, gamma and white per channel, blur, noise, JPEG quality)
the domains lie in one order: task 1's scanners; then REFERENCE and task 2's training scanners;
then task 2's unseen scanners, outside the training scanners' range. So at every shift no task-1
scanner is nearer an unseen scanner than the nearest task-2 training scanner, and no task-2
scanner is nearer an unseen organ's scanner than the nearest training organ's.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import cv2
import numpy as np

from cosas_tutorial.data.acquisition import Acquisition, render, scanner
from cosas_tutorial.data.layout import COSAS_TRAIN_DOMAINS, TASKS, pair_dirs
from cosas_tutorial.data.tissue import (
    EMPTY_TILE_FRACTION,
    BreastCarcinoma,
    GlandularCarcinoma,
    Morphology,
    Tissue,
    blend,
)

ORGAN_DOMAINS = {"train": COSAS_TRAIN_DOMAINS["task1"], "test": ("esophagus", "duodenum")}
SCANNER_DOMAINS = {"train": COSAS_TRAIN_DOMAINS["task2"], "test": ("3d-250", "leica-450", "motic")}
DOMAINS = {"task1": ORGAN_DOMAINS, "task2": SCANNER_DOMAINS}
SPLITS = ("train", "test")

GENERATOR_VERSION = 2  # bump when the tiles change: cached trees of another version are stale
MANIFEST = "synthetic.json"
_INCOMPLETE = ".synthetic-incomplete.json"

ORGANS = {
    "colorectum": Morphology(
        gland_radius=17, gland_aspect=1.15, gland_spacing=2.5, gland_coverage=1.0,
        lumen_ratio=0.35, cytoplasm_h=0.06, cytoplasm_e=0.22, mucin=0.7, nucleus_radius=2.4,
        nucleus_elongation=1.7, myoepithelium=0.0, lymphocytes=2.0, fibroblasts=0.6,
        stroma_eosin=0.26, fibre_contrast=0.35, adipose=0.0,
        tumour=GlandularCarcinoma(
            gland_radius=22, spacing=2.0, irregularity=0.18, solid=0.1, nucleus_scale=1.5,
            necrosis=0.6, desmoplasia=0.4,
        ),
    ),
    "pancreas": Morphology(
        gland_radius=9, gland_aspect=1.1, gland_spacing=2.15, gland_coverage=1.0,
        lumen_ratio=0.12, cytoplasm_h=0.30, cytoplasm_e=0.40, mucin=0.0, nucleus_radius=2.3,
        nucleus_elongation=1.1, myoepithelium=0.0, lymphocytes=0.3, fibroblasts=0.8,
        stroma_eosin=0.32, fibre_contrast=0.5, adipose=0.0,
        tumour=GlandularCarcinoma(
            gland_radius=12, spacing=3.2, irregularity=0.25, solid=0.05, nucleus_scale=1.45,
            necrosis=0.1, desmoplasia=0.9,
        ),
    ),
    "stomach": Morphology(
        gland_radius=13, gland_aspect=2.4, gland_spacing=2.3, gland_coverage=1.0,
        lumen_ratio=0.35, cytoplasm_h=0.05, cytoplasm_e=0.12, mucin=0.3, nucleus_radius=2.2,
        nucleus_elongation=1.6, myoepithelium=0.0, lymphocytes=1.2, fibroblasts=0.5,
        stroma_eosin=0.28, fibre_contrast=0.3, adipose=0.0,
        tumour=GlandularCarcinoma(
            gland_radius=15, spacing=2.0, irregularity=0.22, solid=0.3, nucleus_scale=1.55,
            necrosis=0.2, desmoplasia=0.5,
        ),
    ),
    # Unseen organs of the test set (Barrett-type oesophageal and duodenal mucosa).
    "esophagus": Morphology(
        gland_radius=15, gland_aspect=1.5, gland_spacing=3.4, gland_coverage=1.0,
        lumen_ratio=0.5, cytoplasm_h=0.08, cytoplasm_e=0.18, mucin=0.5, nucleus_radius=2.4,
        nucleus_elongation=1.6, myoepithelium=0.0, lymphocytes=1.0, fibroblasts=0.7,
        stroma_eosin=0.33, fibre_contrast=0.6, adipose=0.0,
        tumour=GlandularCarcinoma(
            gland_radius=18, spacing=2.2, irregularity=0.2, solid=0.3, nucleus_scale=1.5,
            necrosis=0.3, desmoplasia=0.6,
        ),
    ),
    "duodenum": Morphology(
        gland_radius=11, gland_aspect=1.8, gland_spacing=2.2, gland_coverage=1.0,
        lumen_ratio=0.4, cytoplasm_h=0.10, cytoplasm_e=0.28, mucin=0.45, nucleus_radius=2.3,
        nucleus_elongation=1.7, myoepithelium=0.0, lymphocytes=2.5, fibroblasts=0.4,
        stroma_eosin=0.24, fibre_contrast=0.25, adipose=0.0,
        tumour=GlandularCarcinoma(
            gland_radius=17, spacing=1.9, irregularity=0.2, solid=0.15, nucleus_scale=1.5,
            necrosis=0.4, desmoplasia=0.5,
        ),
    ),
}  # fmt: skip

# Task 2 tissue: breast lobules (small acini with a myoepithelial layer) in fibrous stroma and fat;
# invasive carcinoma of no special type as nests, tubules and cords.
BREAST = Morphology(
    gland_radius=8, gland_aspect=1.2, gland_spacing=2.3, gland_coverage=0.35, lumen_ratio=0.35,
    cytoplasm_h=0.06, cytoplasm_e=0.22, mucin=0.0, nucleus_radius=2.3, nucleus_elongation=1.2,
    myoepithelium=1.0, lymphocytes=0.5, fibroblasts=0.5, stroma_eosin=0.34, fibre_contrast=0.6,
    adipose=0.35,
    tumour=BreastCarcinoma(
        nest_radius=10, spacing=2.4, irregularity=0.2, tubule_share=0.3, cord_share=0.25,
        nucleus_scale=1.5, desmoplasia=0.6,
    ),
)  # fmt: skip

# Where every organ starts at shift=0: the average of the three training organs.
REFERENCE_ORGAN = blend([ORGANS[name] for name in ORGAN_DOMAINS["train"]], [1 / 3] * 3)

# Task 1's lab: every organ's scanner at shift 0, and each organ's own scanner at full shift,
# within a degree of stain and a few hundredths of colour response of each other. On every
# parameter they lie beyond REFERENCE and all of task 2's training scanners, on the side away
# from task 2's unseen scanners (or level with them: all store tiles losslessly).
ORGAN_LAB = Acquisition.with_stains(
    h=(0.70, 0.665, 0.255), e=(0.17, 0.835, 0.52), gamma=(0.9, 0.91, 0.9), blur_sigma=0.4,
    noise_std=0.006, jpeg_quality=None, white=(0.94, 0.98, 0.985),
)  # fmt: skip
ORGAN_SCANNERS = {
    "colorectum": Acquisition.with_stains(
        h=(0.705, 0.66, 0.25), e=(0.166, 0.838, 0.518), gamma=(0.89, 0.91, 0.91),
        blur_sigma=0.35, noise_std=0.005, jpeg_quality=None, white=(0.938, 0.98, 0.98),
    ),
    "pancreas": Acquisition.with_stains(
        h=(0.696, 0.668, 0.258), e=(0.175, 0.832, 0.523), gamma=(0.91, 0.9, 0.89),
        blur_sigma=0.45, noise_std=0.007, jpeg_quality=None, white=(0.942, 0.977, 0.988),
    ),
    "stomach": Acquisition.with_stains(
        h=(0.702, 0.664, 0.252), e=(0.171, 0.834, 0.524), gamma=(0.9, 0.92, 0.91),
        blur_sigma=0.37, noise_std=0.0065, jpeg_quality=None, white=(0.94, 0.982, 0.983),
    ),
    "esophagus": Acquisition.with_stains(
        h=(0.698, 0.662, 0.26), e=(0.165, 0.836, 0.521), gamma=(0.88, 0.9, 0.9),
        blur_sigma=0.43, noise_std=0.0055, jpeg_quality=None, white=(0.939, 0.981, 0.985),
    ),
    "duodenum": Acquisition.with_stains(
        h=(0.694, 0.669, 0.254), e=(0.174, 0.833, 0.517), gamma=(0.91, 0.89, 0.9),
        blur_sigma=0.41, noise_std=0.006, jpeg_quality=None, white=(0.941, 0.978, 0.99),
    ),
}  # fmt: skip


def domain_profile(task: str, domain: str, shift: float) -> tuple[Morphology, Acquisition]:
    """The morphology and scanner of one synthetic domain at a given shift."""
    if task not in DOMAINS or domain not in DOMAINS[task]["train"] + DOMAINS[task]["test"]:
        known = {t: d["train"] + d["test"] for t, d in DOMAINS.items()}
        raise ValueError(f"unknown synthetic domain {task}/{domain}; known: {known}")
    if task == "task1":
        return (
            REFERENCE_ORGAN.towards(ORGANS[domain], shift),
            ORGAN_LAB.towards(ORGAN_SCANNERS[domain], shift),
        )
    return BREAST, scanner(domain, shift)


def _tile_key(seed: int, task: str, domain: str, index: int) -> bytes:
    return hashlib.sha256(f"cosas-synthetic/{seed}/{task}/{domain}/{index}".encode()).digest()


def tile_id(seed: int, task: str, domain: str, index: int) -> str:
    """Eight hex digits, stable for (seed, task, domain, index) whatever the shift."""
    return _tile_key(seed, task, domain, index)[:4].hex()


def synthesize(
    task: str, domain: str, index: int, size: int = 256, shift: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One tile: (HxWx3 uint8 RGB image, HxW uint8 mask with 0/255).

    The random streams depend on (seed, task, domain, index) only, so a tile keeps its layout
    at every shift. In task 2, where only the scanner moves, it keeps all of its tissue and its
    mask; in task 1 its glands, and so the edge of its mask, follow the organ's morphology.
    """
    morph, acq = domain_profile(task, domain, shift)
    entropy = int.from_bytes(_tile_key(seed, task, domain, index)[:16], "little")
    layout_rng, tissue_rng, scan_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(3)
    )
    conc, mask = Tissue(size, morph, layout_rng, tissue_rng).build()
    return render(conc, acq, scan_rng), mask


# --------------------------------------------------------------------------------------------
# Writing a tree


def _check_arguments(tiles, size, shift, seed, tasks) -> tuple[str, ...]:
    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not is_int(tiles) or tiles < 1:
        raise ValueError(f"tiles must be an integer >= 1 (tiles per domain), got {tiles!r}")
    if not is_int(size) or size < 64:
        raise ValueError(f"size must be an integer >= 64 (tile side in pixels), got {size!r}")
    if not isinstance(shift, numbers.Real) or not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must be a number in [0, 1], got {shift!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(tasks, str) or not tasks or not set(tasks) <= set(TASKS):
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks!r}")
    return tuple(task for task in TASKS if task in tasks)


def _read_parameters(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())["parameters"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: Path, payload: dict) -> None:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _write_png(path: Path, array: np.ndarray) -> None:
    image = array[..., ::-1] if array.ndim == 3 else array  # OpenCV writes BGR
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(buffer.tobytes())


def _write_tile(out: Path, split, task, domain, index, size, shift, seed) -> None:
    image_dir, mask_dir = pair_dirs(out, split, task, domain)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    image, mask = synthesize(task, domain, index, size=size, shift=shift, seed=seed)
    name = tile_id(seed, task, domain, index) + ".png"
    _write_png(image_dir / name, image)
    _write_png(mask_dir / name, mask)


def generate(
    out: Path | str,
    tiles: int = 24,
    size: int = 256,
    shift: float = 0.5,
    seed: int = 0,
    tasks: tuple[str, ...] = ("task1", "task2"),
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write a synthetic COSAS tree to ``out`` and return ``out``.

    ``tiles`` tiles per domain (training and held-out domains alike) of ``size`` x ``size`` pixels,
    written by ``workers`` threads (default: one per CPU, at most 8; the bytes never depend on it).
    Training domains go to COSAS24-TrainingSet, unseen domains to COSAS24-TestSet;
    ``synthetic.json`` records the parameters and is written last. A folder made earlier with
    the same parameters is returned at once; any other non-empty folder is refused
    (FileExistsError), never overwritten.
    """
    tasks = _check_arguments(tiles, size, shift, seed, tasks)
    out = Path(out)
    parameters = {
        "tiles": int(tiles),
        "size": int(size),
        "shift": float(shift),
        "seed": int(seed),
        "tasks": list(tasks),
        "version": GENERATOR_VERSION,
    }
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        made_with = _read_parameters(out / MANIFEST)
        if made_with == parameters:
            return out
        if made_with is not None:
            raise FileExistsError(
                f"{out} holds a synthetic dataset made with other parameters ({made_with}); "
                "choose another folder or delete this one"
            )
        if _read_parameters(out / _INCOMPLETE) != parameters:  # else: our own interrupted run
            raise FileExistsError(
                f"{out} exists and is not empty; refusing to write a synthetic dataset into it"
            )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / _INCOMPLETE, {"parameters": parameters})

    jobs = [
        (split, task, domain, index)
        for split in SPLITS
        for task in tasks
        for domain in DOMAINS[task][split]
        for index in range(tiles)
    ]
    # Tiles are independent (each seeded by its own id) and numpy and OpenCV release the GIL in
    # their heavy parts: two threads wrote 1024² tiles 1.75x faster than one on two cores.
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(_write_tile, out, *job, size, shift, seed) for job in jobs]
        try:
            done = as_completed(futures)
            if progress:
                from tqdm import tqdm

                done = tqdm(done, total=len(jobs), desc="synthetic tiles", unit="tile")
            for future in done:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # an error or Ctrl-C: start no further tiles
            raise

    domains = {split: {task: list(DOMAINS[task][split]) for task in tasks} for split in SPLITS}
    profiles = {}
    for task in tasks:
        for domain in DOMAINS[task]["train"] + DOMAINS[task]["test"]:
            morph, acq = domain_profile(task, domain, shift)
            profiles[f"{task}/{domain}"] = {
                "morphology": morph.to_dict(),
                "acquisition": acq.to_dict(),
            }
    _write_json(
        out / MANIFEST,
        {
            "generator": "cosas_tutorial.data.synthetic",
            "parameters": parameters,
            "domains": domains,
            "empty_tile_fraction": EMPTY_TILE_FRACTION,
            "profiles": profiles,
        },
    )
    (out / _INCOMPLETE).unlink()
    return out
