"""One image of the independent renderer (``benchmarks/xrender.py``), as the workflow
reads it: ``independent_image(cfg, seed, index, folder)`` returns the analysed gray
image, the scene and the true defect rows of image ``index`` of ``seed`` (the image
``xd{seed}_{index:04d}`` of ``bench_labels.py --preset independent --seed {seed}``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fiberprep import pipeline


def independent_image(cfg, seed, index, folder):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "xrender.py"
    spec = importlib.util.spec_from_file_location("xrender", path)
    xrender = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(xrender)
    # the io limits the zones stage applies
    cfg = {**cfg, "io": pipeline.stage_params(cfg)["zones"]["io"]}
    scene, gray, _, _, rows, _ = xrender.read_back(seed, index, cfg, folder)
    return gray, scene, rows
