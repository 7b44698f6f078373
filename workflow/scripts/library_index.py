"""Library gather: ``defect_library/index.parquet`` (+ CSV) with the split of each
defect's image, and one contact sheet per defect type (most severe first)."""

from pathlib import Path

import pandas as pd

from fiberprep import datasets, library, pipeline
from fiberprep import io as fio
from fiberprep.features import FEATURE_UNITS

sm = snakemake  # noqa: F821 (set by Snakemake)
pipeline.log_to(sm.log[0])
P = sm.params
lib_dir = Path(P.library_dir)

index = pipeline.concat_tables([t for t in map(pd.read_parquet, sm.input.library) if len(t)], library.INDEX_COLUMNS)
images = pd.read_parquet(sm.input.images, columns=["image_id", "split"])
index = index.sort_values(["image_id", "number"], ignore_index=True)
index.insert(2, "split", index["image_id"].map(dict(zip(images["image_id"], images["split"]))))
table = datasets.to_arrow(index, datasets.column_units(index.columns, FEATURE_UNITS))
fio.write_parquet(table, sm.output.index)
del table
# streamed to the file: the CSV text of every defect is never held in memory
fio.write_atomic(sm.output.csv, lambda tmp: index.to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8"))

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
