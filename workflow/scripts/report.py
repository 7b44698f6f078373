"""Report: ``qc/report.html``, self-contained, from the dataset tables, the defect
library and the QC overlays of the worst images."""

from pathlib import Path

import pandas as pd

from fiberprep import __version__, pipeline, report
from fiberprep import io as fio

sm = snakemake  # noqa: F821 (set by Snakemake)
pipeline.log_to(sm.log[0])
P = sm.params
lib_dir, qc_dir = Path(P.library_dir), Path(P.qc_dir)


def read_png(path: Path):
    """Display copy (uint8 gray or RGB) of a PNG the run wrote."""
    return fio.load_image(path, max_pixels=10**9, min_side_px=1)[1]


images = pd.read_parquet(sm.input.images)
labels = pd.read_parquet(sm.input.labels)
index = pd.read_parquet(sm.input.index)
defect_ids, image_ids = report.report_selection(index, labels, P.report)
patch_of = dict(zip(index.get("defect_id", []), index.get("patch", [])))
patches = {d: read_png(lib_dir / patch_of[d]) for d in defect_ids}
overlays = {i: read_png(qc_dir / "overlays" / f"{i}.png") for i in image_ids}
run_info = {"fiberprep": __version__, **P.run_info}
page = report.render_report(images, labels, index, patches, overlays, P.report, run_info)
fio.write_bytes(sm.output[0], page.encode("utf-8"))
pipeline.log.info("report: %d patches, %d overlays, %d bytes", len(patches), len(overlays), len(page))
