"""Image sources: a flat folder of photos, or a class-per-subfolder tree (labels = sorted subfolder names).

Each file goes through an ImagePreprocess (resize shorter side, center crop, normalize) into a float32
(3, crop, crop) array (NCHW) or (crop, crop, 3) (NHWC). Files are sorted, then `n` of a seeded permutation
are read, so the same folder gives the same samples on every machine.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from edgeprune.data.errors import CalibrationError
from edgeprune.errors import ConfigError

from edgeprune.data.core import CalibrationData, reader, sample_indices

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
    """How an image file becomes a model input (torchvision-style: resize shorter side, center crop, normalize)."""

    crop: int = 224
    resize: int | None = None  # shorter side before the crop; None = crop * 256 / 224 (the ImageNet convention)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"  # NCHW | NHWC
    scale: float = 1.0 / 255.0  # pixel values to [0, 1] before mean/std

    def __post_init__(self):
        if self.layout.upper() not in ("NCHW", "NHWC"):
            raise ConfigError(f"image layout '{self.layout}' is not NCHW or NHWC", hint="use NCHW (PyTorch) or NHWC")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError(f"mean {self.mean} / std {self.std} need 3 values each, std > 0", hint="e.g. 0.485,0.456,0.406")

    def __call__(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                resize = self.resize or int(round(self.crop * 256 / 224))
                w, h = img.size
                s = resize / min(w, h)
                img = img.resize((max(resize, round(w * s)), max(resize, round(h * s))), Image.BILINEAR)
                w, h = img.size
                left, top = (w - self.crop) // 2, (h - self.crop) // 2
                img = img.crop((left, top, left + self.crop, top + self.crop))
                arr = np.asarray(img, dtype=np.float32) * self.scale  # (crop, crop, 3)
        except (OSError, ValueError) as err:
            raise CalibrationError(f"cannot read image {path}: {err}", hint="remove the file or convert it to JPEG/PNG") from err
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return arr.transpose(2, 0, 1).copy() if self.layout.upper() == "NCHW" else arr


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under `folder` (sorted; recursive or top level only)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(folder: Path) -> list[Path]:
    """Subfolders holding images when `folder` itself holds none at the top: a class-per-subfolder tree, else []."""
    if image_files(folder, recursive=False):
        return []
    return sorted(d for d in folder.iterdir() if d.is_dir() and image_files(d))


def read_images(folder: str | os.PathLike, preprocess: ImagePreprocess, *, n: int | None, seed: int = 0,
                input_name: str = "input") -> CalibrationData:
    """A class-per-subfolder tree (labelled) when `folder` is one, else a flat folder of images."""
    folder = Path(folder)
    classes = class_folders(folder)
    if classes:
        return read_image_tree(folder, preprocess, n=n, seed=seed, input_name=input_name)
    return read_image_folder(folder, preprocess, n=n, seed=seed, input_name=input_name)


@reader("read_image_folder")
def read_image_folder(folder: str | os.PathLike, preprocess: ImagePreprocess, *, n: int | None, seed: int = 0,
                      input_name: str = "input") -> CalibrationData:
    """Every image under `folder` (recursively), unlabelled."""
    folder = Path(folder)
    files = image_files(folder)
    if not files:
        raise CalibrationError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})",
                               hint="point at a folder that holds photos")
    picked = [files[i] for i in sample_indices(len(files), n, seed)]
    source = f"{folder} ({len(picked)} of {len(files)} images)"
    return CalibrationData({input_name: _stack(picked, preprocess)}, source, files=[p.resolve() for p in picked])


def read_image_tree(folder: str | os.PathLike, preprocess: ImagePreprocess, *, n: int | None, seed: int = 0,
                    input_name: str = "input") -> CalibrationData:
    """folder/<class>/<image>: label i = the i-th subfolder name in sorted order."""
    folder = Path(folder)
    classes = class_folders(folder)
    if not classes:
        raise CalibrationError(f"{folder} is not a class-per-subfolder image tree",
                               hint="put each class's images in its own subfolder, and none at the top")
    # (path, class id) over all classes, in sorted class then path order
    entries = [(p, label) for label, d in enumerate(classes) for p in image_files(d)]
    picked = [entries[i] for i in sample_indices(len(entries), n, seed)]
    source = f"{folder} ({len(picked)} of {len(entries)} images, {len(classes)} classes)"
    return CalibrationData({input_name: _stack([p for p, _ in picked], preprocess)}, source,
                           labels=np.array([label for _, label in picked], dtype=np.int64),
                           class_names=[d.name for d in classes], files=[p.resolve() for p, _ in picked])


def _stack(paths: list[Path], preprocess: ImagePreprocess) -> np.ndarray:
    """(N, 3, crop, crop) or (N, crop, crop, 3) float32."""
    return np.stack([preprocess(p) for p in paths])


__all__ = ["ImagePreprocess", "IMAGE_SUFFIXES", "image_files", "class_folders", "read_images", "read_image_folder",
           "read_image_tree"]
