"""Input scanning, robust loading and atomic writers (issue 8 item 1, issue 2 item 6)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bad_inputs import SHAPE, extraneous_bytes_jpeg, fiber_like, write_bad_inputs
from fiberprep import io as fio

EXTENSIONS = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"]
MAX_PIXELS = 40_000_000
MIN_SIDE = 64
REAL = Path(__file__).resolve().parents[2] / "shared" / "real_images"


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_inputs(folder)


def _load(path):
    return fio.load_image(path, MAX_PIXELS, MIN_SIDE)


# ----------------------------------------------------------------------------- scan


def test_scan_lists_every_input_once_sorted_with_contract_ids(bad_dir):
    folder, expected = bad_dir
    table = fio.scan_inputs(folder, EXTENSIONS)
    assert list(table.columns) == fio.SCAN_COLUMNS
    assert sorted(table["rel_path"]) == sorted(expected)  # folder loop "sub dir/up" not followed
    assert list(table["rel_path"]) == sorted(table["rel_path"])
    assert table["image_id"].is_unique
    ids = dict(zip(table["rel_path"], table["image_id"]))
    assert ids["a.jpg"] == "a" and ids["a.png"] == "a-2"
    assert ids["UPPER.PNG"] == "UPPER"
    assert ids["sub dir/with space (1).png"] == "sub_dir_with_space__1_"
    assert all(set(i) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
               for i in table["image_id"])
    assert all(Path(p).is_absolute() for p in table["source_path"])
    row = table.set_index("rel_path").loc["fiber.png"]
    assert row["size_bytes"] == (folder / "fiber.png").stat().st_size


def test_scan_follows_folder_links_once_and_skips_excluded(tmp_path):
    data = tmp_path / "data"
    (data / "x").mkdir(parents=True)
    cv2.imwrite(str(data / "x" / "one.png"), fiber_like())
    (tmp_path / "elsewhere").mkdir()
    cv2.imwrite(str(tmp_path / "elsewhere" / "two.png"), fiber_like())
    os.symlink(tmp_path / "elsewhere", data / "linked")
    os.symlink(data / "x", data / "x_again")  # same folder twice: listed once
    (data / "results").mkdir()
    cv2.imwrite(str(data / "results" / "mask.png"), fiber_like())
    table = fio.scan_inputs(data, ["png"], exclude_dir=data / "results")
    assert list(table["rel_path"]) == ["linked/two.png", "x/one.png"]


def test_scan_empty_and_missing_folder(tmp_path):
    empty = fio.scan_inputs(tmp_path, EXTENSIONS)
    assert empty.empty and list(empty.columns) == fio.SCAN_COLUMNS
    with pytest.raises(FileNotFoundError, match="input folder not found"):
        fio.scan_inputs(tmp_path / "nope", EXTENSIONS)


def test_image_ids_are_deterministic_and_order_independent():
    paths = ["a.png", "a.jpg", "a-2.png", "b c.tif", "b_c.png", "sub/d.JPEG", "sub_d.bmp"]
    ids = fio.make_image_ids(paths, EXTENSIONS)
    assert dict(zip(paths, ids)) == {
        "a-2.png": "a-2",      # a natural id keeps its name...
        "a.jpg": "a",
        "a.png": "a-3",        # ...so the collision skips it
        "b c.tif": "b_c",
        "b_c.png": "b_c-2",
        "sub/d.JPEG": "sub_d",
        "sub_d.bmp": "sub_d-2",
    }
    shuffled = paths[::-1]
    assert dict(zip(shuffled, fio.make_image_ids(shuffled, EXTENSIONS))) == dict(zip(paths, ids))


def test_image_ids_safe_as_folder_names():
    long_a, long_b = "d/" + "x" * 300 + "a.png", "d/" + "x" * 300 + "b.png"
    ids = fio.make_image_ids(["..png", ".png", long_a, long_b, "光.png"], EXTENSIONS)
    assert ids[0] == "_" and ids[1] == "_-2"
    assert len(ids[2]) == fio.MAX_ID_CHARS and ids[2] != ids[3]
    assert ids[4] == "_-3"


# ----------------------------------------------------------------------------- load


def test_every_input_loads_or_is_rejected_with_its_reason(bad_dir, capfd):
    folder, expected = bad_dir
    for rel, expect in sorted(expected.items()):
        path = folder / rel
        if expect == "ok":
            gray, display, info = _load(path)
            assert gray.dtype == np.float32 and gray.ndim == 2, rel
            assert 0.0 <= gray.min() and gray.max() <= 1.0, rel
            assert display.dtype == np.uint8 and display.shape[:2] == gray.shape, rel
            assert (info["height"], info["width"]) == gray.shape, rel
            json.dumps(info)  # stored in zones.json
        else:
            with pytest.raises(fio.ImageRejected) as err:
                _load(path)
            assert expect in err.value.reason.lower(), (rel, err.value.reason)
            assert "\n" not in err.value.reason
    assert capfd.readouterr().err == ""  # libjpeg/libpng/OpenCV chatter is captured


def test_formats_decode_to_the_same_picture(bad_dir):
    folder, _ = bad_dir
    ref = fiber_like().astype(np.float32) / 255
    gray_png, _, _ = _load(folder / "fiber.png")
    assert np.array_equal(gray_png, ref)
    for name in ("gray16.png", "gray16.tif"):  # 12-bit data scaled by 4095, not by 65535
        gray, display, info = _load(folder / name)
        assert info["bit_depth"] == 16
        assert np.abs(gray - ref).max() < 2 / 255
        assert np.abs(display.astype(int) - fiber_like()).max() <= 2
    gray, _, info = _load(folder / "multipage.tiff")
    assert np.array_equal(gray, ref) and "first of 3 pages" in info["notes"]
    base, _, _ = _load(folder / "fiber.bmp")
    for name in ("a.jpg", "cmyk.jpg", "palette.png", "rgba.png"):
        gray, display, _ = _load(folder / name)
        assert display.ndim == 3 and np.abs(gray - base).mean() < 0.03, name
    rotated, _, info = _load(folder / "exif_rotated.jpg")
    assert rotated.shape == SHAPE[::-1] and "orientation 6" in info["notes"]
    assert np.abs(np.rot90(rotated, 1) - base).mean() < 0.03


def test_saturated_image_is_kept_and_measured(bad_dir):
    folder, _ = bad_dir
    _, _, info = _load(folder / "saturated.png")
    assert info["saturated_fraction"] > 0.5
    _, _, info = _load(folder / "fiber.png")
    assert info["saturated_fraction"] == 0.0


def test_jpeg_with_extraneous_bytes_is_used_quietly(tmp_path, capfd):
    path = tmp_path / "scope.jpg"
    path.write_bytes(extraneous_bytes_jpeg(fiber_like()))
    gray, _, info = _load(path)
    assert gray.shape == SHAPE
    assert "extraneous bytes" in info["notes"]
    assert capfd.readouterr().err == ""


def test_truncated_jpeg_rejected_wherever_it_ends(tmp_path):
    data = (tmp_path / "x").with_suffix(".jpg")
    full = cv2.imencode(".jpg", fiber_like())[1].tobytes()
    for cut in (0.3, 0.6, 0.9, 0.99):
        data.write_bytes(full[: int(len(full) * cut)])
        with pytest.raises(fio.ImageRejected, match="truncated"):
            _load(data)


def test_name_not_valid_utf8_is_listed_and_rejected_with_its_reason(tmp_path):
    good = tmp_path / "ok.png"
    assert cv2.imwrite(str(good), fiber_like())
    os.link(good, os.path.join(os.fsencode(tmp_path), b"caf\xe9.png"))  # a Latin-1 name
    table = fio.scan_inputs(tmp_path, EXTENSIONS)
    assert list(table["rel_path"]) == ["caf\\xe9.png", "ok.png"]
    assert list(table["image_id"]) == ["caf_xe9", "ok"] and table["size_bytes"].nunique() == 1
    with pytest.raises(fio.ImageRejected, match="not valid UTF-8.*rename"):
        _load(table["source_path"].iloc[0])
    with pytest.raises(fio.ImageRejected, match="file not found"):
        _load(tmp_path / "gone.png")


def test_macos_companion_file_rejected_as_such(tmp_path):
    # "._name.JPG": the AppleDouble header (magic, version 2, filler) a Mac writes on FAT/exFAT sticks
    path = tmp_path / "._DSCN0001.JPG"
    path.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + bytes(4000))
    with pytest.raises(fio.ImageRejected, match="macOS metadata file"):
        fio.load_image(path, MAX_PIXELS, MIN_SIDE)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_unreadable_file_rejected(bad_dir):
    folder, _ = bad_dir
    with pytest.raises(fio.ImageRejected, match="permission denied"):
        _load(folder / "locked.png")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as an unprivileged user")
def test_unreadable_file_rejected_for_a_user_who_cannot_read_it(tmp_path):
    """As root (CI), a mode-000 file is read as the user `nobody` would: rejected."""
    folder = tmp_path / "shared"
    folder.mkdir()
    cv2.imwrite(str(folder / "fiber.png"), fiber_like())
    cv2.imwrite(str(folder / "locked.png"), fiber_like())
    os.chmod(folder / "locked.png", 0)
    for part in (folder, *folder.parents):  # let `nobody` reach the folder
        part.chmod(part.stat().st_mode | 0o011)
    assert _load(folder / "fiber.png")[0].shape == SHAPE  # warm every lazy import as root
    os.seteuid(65534)
    try:
        readable = _load(folder / "fiber.png")[0].shape
        with pytest.raises(fio.ImageRejected, match="permission denied"):
            _load(folder / "locked.png")
    finally:
        os.seteuid(0)
    assert readable == SHAPE


def test_size_limits_come_from_the_parameters(bad_dir):
    folder, _ = bad_dir
    with pytest.raises(fio.ImageRejected, match="io.max_pixels"):
        fio.load_image(folder / "fiber.png", 320 * 240 - 1, MIN_SIDE)
    with pytest.raises(fio.ImageRejected, match="io.min_side_px"):
        fio.load_image(folder / "fiber.png", MAX_PIXELS, 241)
    assert fio.load_image(folder / "fiber.png", 320 * 240, 240)[0].shape == SHAPE


@pytest.mark.parametrize("value, word", [(0, "black"), (128, "gray"), (255, "white")])
def test_blank_image_reason_names_its_level(tmp_path, value, word):
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), np.full(SHAPE, value, np.uint8))
    with pytest.raises(fio.ImageRejected, match=f"uniformly {word}"):
        fio.load_image(path, MAX_PIXELS, MIN_SIDE)


def test_to_gray_scales_by_significant_bits():
    assert fio.to_gray(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    assert fio.to_gray(np.array([[0, 1023]], np.uint16)).tolist() == [[0.0, 1.0]]
    assert fio.to_gray(np.array([[0, 1024]], np.uint16))[0, 1] == pytest.approx(1024 / 2047)
    assert fio.to_gray(np.array([[0.0, 0.5]], np.float32)).tolist() == [[0.0, 0.5]]
    assert fio.to_gray(np.array([[-2.0, 2.0]])).tolist() == [[0.0, 1.0]]
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, 1] = (255, 255, 255)
    assert fio.to_gray(rgb)[0].tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="channels"):
        fio.to_gray(np.zeros((2, 2, 2), np.uint8))


# ----------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=2048),
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*"])
    .flatmap(lambda magic: st.binary(max_size=2048).map(lambda tail: magic + tail)),
))
def test_loader_never_raises_anything_but_rejection_on_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("rand") / "x.png"
    path.write_bytes(data)
    try:
        gray, display, _ = _load(path)
    except fio.ImageRejected as err:
        assert err.reason
    else:
        assert gray.shape == display.shape[:2]


_SHAPES = st.tuples(st.integers(1, 90), st.integers(1, 90)).flatmap(
    lambda hw: st.sampled_from([hw, hw + (3,), hw + (4,)]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(st.sampled_from([np.uint8, np.uint16]), _SHAPES),
       st.sampled_from([".png", ".jpg", ".tif", ".bmp"]))
def test_loader_on_random_small_arrays(tmp_path_factory, array, ext):
    if ext in (".jpg", ".bmp"):
        array = (array >> 8).astype(np.uint8) if array.dtype == np.uint16 else array
        array = array[:, :, :3] if array.ndim == 3 else array
    ok, encoded = cv2.imencode(ext, array)
    path = tmp_path_factory.mktemp("arr") / f"x{ext}"
    path.write_bytes(encoded.tobytes())
    try:
        gray, display, info = fio.load_image(path, MAX_PIXELS, 1)
    except fio.ImageRejected as err:
        assert "blank" in err.reason  # the only reason a well-formed file is refused
    else:
        assert gray.shape == array.shape[:2] == display.shape[:2]
        assert (info["width"], info["height"]) == (array.shape[1], array.shape[0])


# ----------------------------------------------------------------------------- write


def test_file_checksum_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    assert fio.file_checksum(path) == hashlib.sha256(data).hexdigest()
    assert fio.file_checksum(path, chunk_bytes=7) == hashlib.sha256(data).hexdigest()
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(fio.ImageRejected, match="not a regular file"):
        fio.file_checksum(tmp_path / "pipe.png")  # and does not block
    os.symlink("loop.png", tmp_path / "loop.png")
    with pytest.raises(fio.ImageRejected, match="link loop"):
        fio.file_checksum(tmp_path / "loop.png")


def test_write_atomic_leaves_old_file_and_no_temp_on_failure(tmp_path):
    path = tmp_path / "t.json"
    fio.write_json(path, {"a": 1})

    def broken(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        fio.write_atomic(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_write_atomic_replaces_a_folder(tmp_path):
    store = tmp_path / "sub" / "x.zarr"

    def writer(n):
        return lambda tmp: (Path(tmp).mkdir(), (Path(tmp) / f"part{n}").write_text(str(n)))

    fio.write_atomic(store, writer(1))
    fio.write_atomic(store, writer(2))
    assert [p.name for p in store.iterdir()] == ["part2"]
    assert [p.name for p in store.parent.iterdir()] == ["x.zarr"]


def test_write_png_round_trip_and_same_bytes(tmp_path):
    rng = np.random.default_rng(0)
    for name, image in {
        "g8.png": rng.integers(0, 256, (20, 30), dtype=np.uint8),
        "g16.png": rng.integers(0, 65536, (20, 30), dtype=np.uint16),
        "rgb.png": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
    }.items():
        fio.write_png(tmp_path / name, image)
        first = (tmp_path / name).read_bytes()
        fio.write_png(tmp_path / name, image)
        assert (tmp_path / name).read_bytes() == first
        back = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
        if image.ndim == 3:
            back = cv2.cvtColor(back, cv2.COLOR_BGR2RGB)
        assert np.array_equal(back, image)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        fio.write_png(tmp_path / "f.png", np.zeros((2, 2), np.float32))


def test_write_json_and_parquet(tmp_path):
    fio.write_json(tmp_path / "a.json", {"n": np.int64(3), "x": np.float32(0.5),
                                         "v": np.arange(2), "ok": np.bool_(True)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"n": 3, "x": 0.5, "v": [0, 1],
                                                             "ok": True}
    df = pd.DataFrame({"image_id": ["b", "a"], "area_px": [3, 4]}, index=[5, 6])
    schema = pa.schema([("image_id", pa.string()), ("area_px", pa.int32())])
    fio.write_parquet(df, tmp_path / "t.parquet", schema=schema)
    first = (tmp_path / "t.parquet").read_bytes()
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.schema.field("area_px").type == pa.int32()
    assert table.to_pandas().equals(df.reset_index(drop=True).astype({"area_px": "int32"}))
    fio.write_parquet(df, tmp_path / "t.parquet", schema=schema)
    assert (tmp_path / "t.parquet").read_bytes() == first
    fio.write_parquet(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "u.parquet",
                      schema=schema)
    assert pq.read_table(tmp_path / "u.parquet").equals(table)


# ----------------------------------------------------------------------------- real photos


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images not available")
def test_real_photos_all_load_quietly(capfd):
    table = fio.scan_inputs(REAL, EXTENSIONS)
    assert len(table) >= 100
    warned = 0
    for path in table["source_path"]:
        gray, display, info = _load(path)
        assert gray.shape == display.shape[:2] and min(gray.shape) >= 512
        warned += "extraneous bytes" in info["notes"]
    assert warned > 0  # the scope JPEGs with format faults are used, not rejected
    assert capfd.readouterr().err == ""


def test_repeated_keys_are_named_with_their_lines_at_any_depth():
    text = "a: 1\nb:\n  c: 2\n  d: 3\n  c: 4\nitems:\n  - x: 1\n    x: 2\nd: 5\n"
    assert fio.repeated_keys(text) == [("b.c", 3, 5), ("items.0.x", 7, 8)]
    assert fio.repeated_keys("a: 1\nb: {c: 1}\n") == []


def test_csv_twin_reads_back_as_its_table(tmp_path):
    # strings with separators, quotes and line breaks, nulls of every kind, bools
    frame = pd.DataFrame({"defect_id": ["a#1", "b,c#2", 'say "x"#3', "line\nbreak#4"],
                          "score": [0.25, np.nan, 1e-7, 3.0], "n": pd.array([1, None, 3, 4], "Int64"),
                          "has": [True, False, True, False], "zone": ["core", None, "B; C", ""]})
    fio.write_csv(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv", keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(frame.columns)
    assert back["defect_id"].tolist() == frame["defect_id"].tolist()
    np.testing.assert_array_equal(back["score"].to_numpy(float), frame["score"].to_numpy(float))
    np.testing.assert_array_equal(back["n"].to_numpy(float), frame["n"].to_numpy(float, na_value=np.nan))
    assert back["has"].tolist() == frame["has"].tolist()
    assert back["zone"].fillna("").tolist() == ["core", "", "B; C", ""]  # a null and "" are both empty
    assert not list(tmp_path.glob(".*"))  # written through a temporary name
