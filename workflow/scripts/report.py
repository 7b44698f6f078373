"""Defect library and report (gather): ``defect_library/index.parquet`` (+ CSV) with the
split of each defect's image, one contact sheet per defect type (most severe first),
then ``qc/report.html``, self-contained, from the image tables (built from the shards'
fragments as the dataset tables are, ``datasets.image_tables``), that index and the QC
overlays of the worst images."""

from pathlib import Path

import pandas as pd

from fiberprep import __version__, datasets, library, pipeline, report, zones
from fiberprep import io as fio
from fiberprep.features import DEFECT_FEATURE_NAMES, FEATURE_UNITS

sm = snakemake  # noqa: F821 (set by Snakemake)
pipeline.log_to(sm.log[0])
P = sm.params
lib_dir, qc_dir = Path(P.library_dir), Path(P.qc_dir)

# ---- the defect library
index = pipeline.concat_tables([t for t in map(pd.read_parquet, sm.input.library) if len(t)], library.INDEX_COLUMNS)
images, labels = pipeline.read_image_tables(sm.input.images, sm.input.labels, P.split)
index = index.sort_values(["image_id", "number"], ignore_index=True)
index.insert(2, "split", index["image_id"].map(dict(zip(images["image_id"], images["split"]))))
pipeline.write_published_table(index, sm.output.index, FEATURE_UNITS)  # and sm.output.csv

cfg = P.library
for name, out in zip(datasets.DEFECT_CLASSES.values(), sm.output.sheets):
    sel = index[index["type"] == name] if "type" in index.columns else pd.DataFrame(columns=["patch", "severity_score"])
    if len(sel):
        sel = sel.sort_values(["severity_score", "defect_id"], ascending=[False, True]).head(int(cfg["max_per_sheet"]))
    patches = [datasets.decode_png((lib_dir / p).read_bytes()) for p in sel["patch"]]
    sheet = library.contact_sheet(patches, [f"{s:.2f}" for s in sel["severity_score"].fillna(0)],
                                  int(cfg["tile_px"]), int(cfg["columns"]))
    fio.write_png(out, sheet)
    pipeline.log.info("contact sheet %s: %d patches", name, len(patches))

# ---- the report: only the index columns it reads
index = index[[c for c in report.index_columns(DEFECT_FEATURE_NAMES) if c in index.columns]]
defect_ids, image_ids = report.report_selection(index, labels, P.report, DEFECT_FEATURE_NAMES)
patch_of = dict(zip(index.get("defect_id", []), index.get("patch", [])))
patches = {d: datasets.decode_png((lib_dir / patch_of[d]).read_bytes()) for d in defect_ids}
overlays = {i: datasets.decode_png((qc_dir / "overlays" / f"{i}.png").read_bytes()) for i in image_ids}
run_info = {"fiberprep": __version__, **P.run_info}
page = report.render_report(images, labels, index, patches, overlays, P.report, run_info, DEFECT_FEATURE_NAMES,
                            zones.ZONE_NAMES)
fio.write_bytes(sm.output.report, page.encode("utf-8"))
pipeline.log.info("report: %d patches, %d overlays, %d bytes", len(patches), len(overlays), len(page))
