"""Report: ``qc/report.html``, self-contained, from the dataset tables, the defect
library and the QC overlays of the worst images."""

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fiberprep import __version__, datasets, pipeline, report, zones
from fiberprep import io as fio
from fiberprep.features import DEFECT_FEATURE_NAMES

sm = snakemake  # noqa: F821 (set by Snakemake)
pipeline.log_to(sm.log[0])
P = sm.params
lib_dir, qc_dir = Path(P.library_dir), Path(P.qc_dir)


images = pd.read_parquet(sm.input.images)
labels = pd.read_parquet(sm.input.labels)
stored = set(pq.read_schema(sm.input.index).names)
index = pd.read_parquet(sm.input.index, columns=[c for c in report.index_columns(DEFECT_FEATURE_NAMES) if c in stored])
defect_ids, image_ids = report.report_selection(index, labels, P.report, DEFECT_FEATURE_NAMES)
patch_of = dict(zip(index.get("defect_id", []), index.get("patch", [])))
patches = {d: datasets.decode_png((lib_dir / patch_of[d]).read_bytes()) for d in defect_ids}
overlays = {i: datasets.decode_png((qc_dir / "overlays" / f"{i}.png").read_bytes()) for i in image_ids}
run_info = {"fiberprep": __version__, **P.run_info}
page = report.render_report(images, labels, index, patches, overlays, P.report, run_info, DEFECT_FEATURE_NAMES,
                            zones.ZONE_NAMES)
fio.write_bytes(sm.output[0], page.encode("utf-8"))
pipeline.log.info("report: %d patches, %d overlays, %d bytes", len(patches), len(overlays), len(page))
