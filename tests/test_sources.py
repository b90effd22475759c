"""gradguard.data.sources: the built-in, .npz and folder sources, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gradguard.data.sources import load_source, normalise_images
from gradguard.data.splits import check_labels
from gradguard.errors import DataError
from gradguard.params import DataParams


def test_digits_are_resized_scaled_and_labelled():
    x, y = load_source(DataParams(image_size=16))
    assert x.shape == (1797, 16, 16, 1) and x.dtype == np.uint8  # one byte a pixel
    assert x.min() == 0 and x.max() == 255  # the digits' 0..16 scale spans 0..255
    assert y.dtype == np.int32 and sorted(set(y.tolist())) == list(range(10))


def test_npz_source_reads_uint8_and_converts_rgb(tmp_path):
    path = tmp_path / "data.npz"
    x = np.zeros((12, 8, 8, 3), np.uint8)
    x[:, :, :, 0] = 255  # pure red: luma 0.299
    np.savez(path, x=x, y=np.arange(12) % 3)
    images, labels = load_source(DataParams(source="npz", path=str(path), image_size=8))
    assert images.shape == (12, 8, 8, 1)
    assert (images == 76).all()  # round(0.299 * 255) = round(76.245)
    assert labels.tolist() == (np.arange(12) % 3).tolist()
    rgb, _ = load_source(DataParams(source="npz", path=str(path), image_size=8, channels=3))
    assert rgb.shape == (12, 8, 8, 3) and (rgb == [255, 0, 0]).all()  # colour kept


def test_grey_becomes_three_equal_channels_and_floats_round_to_bytes(tmp_path):
    path = tmp_path / "grey.npz"
    x = np.array([0.0, 0.5, 1.0, 0.2], np.float32).reshape(1, 2, 2).repeat(6, 0)
    np.savez(path, x=x, y=np.arange(6) % 2)
    images, _ = load_source(DataParams(source="npz", path=str(path), image_size=2, channels=3))
    assert images.shape == (6, 2, 2, 3)
    # 0.5 * 255 = 127.5 rounds to even 128; 0.2 * 255 = 51.
    assert images[0, :, :, 0].tolist() == [[0, 128], [255, 51]]
    assert (images == images[..., :1]).all()


def test_a_large_npz_is_read_in_chunks_with_the_same_result(tmp_path):
    from gradguard.data.sources import CHUNK

    rng = np.random.default_rng(0)
    n = 2 * CHUNK + 5  # three chunks, the last short
    x = rng.random((n, 4, 4), np.float32)
    path = tmp_path / "big.npz"
    np.savez(path, x=x, y=np.arange(n) % 2)
    images, _ = load_source(DataParams(source="npz", path=str(path), image_size=4))
    np.testing.assert_array_equal(images[..., 0], np.rint(x * 255).astype(np.uint8))
    x[CHUNK + 3, 0, 0] = np.nan  # a bad pixel in the second chunk is named with its images
    np.savez(path, x=x, y=np.arange(n) % 2)
    with pytest.raises(
        DataError, match=rf"1 NaN or Inf pixel\(s\) \(images {CHUNK}\.\.{2 * CHUNK - 1}\)"
    ):
        load_source(DataParams(source="npz", path=str(path), image_size=4))


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"x": np.zeros((4, 8, 8))}, "missing array(s) ['y']"),
        ({"x": np.zeros((4, 8)), "y": np.zeros(4, int)}, "x has shape (4, 8); expected"),
        ({"x": np.array([["a"] * 8] * 8)[None].repeat(4, 0), "y": np.zeros(4, int)}, "dtype <U1"),
        ({"x": np.full((4, 8, 8), np.nan), "y": np.zeros(4, int)}, "x holds 256 NaN or Inf pixel"),
        ({"x": np.full((4, 8, 8), 2.0), "y": np.zeros(4, int)}, "expected [0, 1]"),
        ({"x": np.zeros((4, 8, 8)), "y": np.array([0, 1, 3, 3])}, "classes [2] have no images"),
        ({"x": np.zeros((4, 8, 8)), "y": np.array([0, -1, 1, 1])}, "label -1 is out of range"),
        ({"x": np.zeros((4, 8, 8)), "y": np.zeros(3, int)}, "y has shape (3,); expected (4,)"),
        ({"x": np.zeros((4, 8, 8)), "y": np.zeros(4)}, "y has dtype float64"),
    ],
)
def test_bad_npz_files_get_one_clear_line(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as error:
        load_source(DataParams(source="npz", path=str(path)))
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_missing_and_pickled_npz_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_source(DataParams(source="npz", path=str(tmp_path / "none.npz")))
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DataError, match="plain arrays"):
        load_source(DataParams(source="npz", path=str(pickled)))


def test_image_folder_source_reads_one_class_per_subfolder(tmp_path):
    for label, shade in (("cat", 0), ("dog", 255)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 10), (shade, shade, shade)).save(tmp_path / label / f"{i}.png")
    x, y = load_source(DataParams(source="folder", path=str(tmp_path), image_size=6))
    assert x.shape == (6, 6, 6, 1)
    assert y.tolist() == [0, 0, 0, 1, 1, 1]  # sorted folder names: cat=0, dog=1
    assert (x[y == 1] == 255).all() and (x[y == 0] == 0).all()


def test_a_folder_decodes_in_parallel_to_the_same_bytes_as_one_process(tmp_path):
    from gradguard.data.sources import load_folder

    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(300):  # 600 files: two chunks of 512 for the pool
            pixels = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i:03d}.png")
    one = load_folder(str(tmp_path), 5, channels=3, workers=1)
    two = load_folder(str(tmp_path), 5, channels=3, workers=2)
    assert one[0].shape == (600, 5, 5, 3) and one[0].tobytes() == two[0].tobytes()
    assert one[1].tolist() == two[1].tolist() == [0] * 300 + [1] * 300
    first = Image.open(tmp_path / "a" / "000.png").resize((5, 5), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(one[0][0], np.asarray(first))
    # `prepare` loads no framework, so there the workers are forked and share the output
    # buffer; this process has TensorFlow loaded (it spawns), so run that path in a fresh one.
    code = (
        "import sys; import numpy as np; from gradguard.data.sources import load_folder; "
        "x, y = load_folder(sys.argv[1], 5, channels=3, workers=2); "
        "assert 'tensorflow' not in sys.modules; np.save(sys.argv[2], x)"
    )
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), str(tmp_path / "fork.npy")], check=True
    )
    forked = np.load(tmp_path / "fork.npy", allow_pickle=False)
    assert forked.tobytes() == one[0].tobytes()


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_source(DataParams(source="folder", path=str(tmp_path / "nope")))
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="found 1 class folder"):
        load_source(DataParams(source="folder", path=str(tmp_path)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "only" / "ok.png").write_bytes(b"")
    with pytest.raises(DataError, match="not a readable image"):
        load_source(DataParams(source="folder", path=str(tmp_path)))


def test_helpers_accept_good_arrays_unchanged():
    x = normalise_images(np.full((2, 3, 3, 1), 7, np.uint8), "x")
    assert x.shape == (2, 3, 3, 1) and x.dtype == np.uint8 and (x == 7).all()
    assert check_labels(np.array([1, 0]), 2, "y").tolist() == [1, 0]
