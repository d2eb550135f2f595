"""Procedural data generators (deterministic by seed) and readers of real dataset formats.

- `zoo.data.anomaly`: textures and a parts tray with structural and logical anomalies, written in the MVTec AD layout.
- `zoo.data.mvtec`: reader for MVTec AD / MVTec LOCO AD folders (and the generator's output).
- `zoo.data.natural`: photographs bundled with scikit-image, and a random-crop image-folder dataset.
- `zoo.data.textures`: tinted texture sources and random patches of them.
- `zoo.data.shapes`: shapes scenes (things and stuff) with boxes, instance masks, panoptic maps and
  referring expressions, written as COCO detection, COCO panoptic and RefCOCO-style JSON.
- `zoo.data.documents`: rendered text pages with blur, noise, watermarks or seals, written as paired folders.
- `zoo.data.paired`: reader of paired degraded/clean folders (real data and ours alike).
- `zoo.data.coco`, `zoo.data.refcoco`: writers and readers of those formats (real data and ours alike).
- `zoo.data.generation`: class-labelled images for generators (`ClassImageSet`: shapes or textures) and
  the user's own folders (`ImageFolderSet`); both exported here.
- `_rng`, `_io`, `_draw`: seeded random streams, reproducible image/JSON writing, drawing primitives.

Submodules are imported on use, so that `import zoo.data` stays cheap.
"""


def __getattr__(name: str):  # lazy exports (PEP 562): importing zoo.data stays cheap
    if name in ("ClassImageSet", "ImageFolderSet"):
        from zoo.data import generation

        return getattr(generation, name)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
