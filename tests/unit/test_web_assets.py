"""web.assets: integrity pins, tarball reading and the vendoring flow, without network."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from web import assets
from web.assets import (
    AssetError,
    IntegrityError,
    Paths,
    check_integrity,
    extract,
    integrity_of,
    is_vendored,
    parse_integrity,
    tarball_name,
    vendor,
)

MIN_JS = b"/*! fake echarts */ !function(){window.echarts={version:'0.0.0'}}();\n"


def make_tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def package_tarball() -> bytes:
    return make_tarball(
        {
            "package/package.json": b'{"name": "echarts"}',
            "package/LICENSE": b"Apache License 2.0\n",
            "package/NOTICE": b"Apache ECharts\n",
            "package/licenses/LICENSE-d3": b"BSD 3-Clause\n",
            "package/dist/echarts.js": b"not this one",
            "package/dist/echarts.min.js": MIN_JS,
        }
    )


def test_pins_are_well_formed():
    algo, digest = parse_integrity(assets.ECHARTS_INTEGRITY)
    assert algo == "sha512" and len(digest) == 64
    assert len(assets.ECHARTS_MIN_SHA256) == 64
    int(assets.ECHARTS_MIN_SHA256, 16)
    assert assets.ECHARTS_VERSION.count(".") == 2


def test_integrity_accepts_the_right_bytes():
    data = b"some tarball bytes" * 100
    sri = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert integrity_of(data) == sri
    check_integrity(data, sri)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: bytes([b[0] ^ 1]) + b[1:],
        lambda b: b"",
    ],
)
def test_integrity_rejects_tampered_bytes(tamper):
    data = b"some tarball bytes" * 100
    sri = integrity_of(data)
    with pytest.raises(IntegrityError, match="does not match the pinned integrity"):
        check_integrity(tamper(data), sri)


def test_integrity_uses_the_strongest_of_several_digests():
    data = b"x" * 10
    good512 = integrity_of(data, "sha512")
    wrong256 = integrity_of(b"other", "sha256")
    # sha512 is checked, so a wrong weaker digest beside it does not matter...
    check_integrity(data, f"{wrong256} {good512}?opt")
    # ...and a wrong sha512 fails although the sha256 is right.
    with pytest.raises(IntegrityError):
        check_integrity(data, f"{integrity_of(data, 'sha256')} {integrity_of(b'y', 'sha512')}")


@pytest.mark.parametrize(
    "bad",
    ["", "md5-1B2M2Y8AsgTpgAmY7PhCfg==", "sha512-not*base64", "sha512-AAAA", "sha1-abc="],
)
def test_malformed_integrity_strings_are_refused(bad):
    with pytest.raises(AssetError):
        parse_integrity(bad)


def test_paths(tmp_path):
    paths = Paths(tmp_path, "6.1.0")
    assert paths.min_js == tmp_path / "web/static/vendor/echarts.min.js"
    assert paths.license == tmp_path / "web/static/vendor/echarts.LICENSE"
    assert paths.tarball == tmp_path / ".cache/npm/echarts-6.1.0.tgz"
    assert Paths(assets.REPO_ROOT).min_js.parent == Path(assets.__file__).parent / "static/vendor"


def test_tarball_names():
    assert tarball_name("6.1.0") == "echarts-6.1.0.tgz"
    assert tarball_name("1.0.0", "@scope/pkg") == "scope-pkg-1.0.0.tgz"
    for bad in ("", "../x", "1.0/2", "1 0"):
        with pytest.raises(AssetError):
            tarball_name(bad)


def test_extract_takes_only_the_bundle_and_licences():
    min_js, license_text = extract(package_tarball())
    assert min_js == MIN_JS
    text = license_text.decode()
    assert text.index("Apache License") < text.index("Apache ECharts") < text.index("BSD 3")
    assert "not this one" not in text


def test_extract_fails_clearly():
    with pytest.raises(AssetError, match="lacks package/dist/echarts.min.js"):
        extract(make_tarball({"package/LICENSE": b"L"}))
    with pytest.raises(AssetError, match="cannot read"):
        extract(b"not a tarball")


def test_extract_ignores_lookalike_paths():
    tarball = make_tarball(
        {
            "../package/dist/echarts.min.js": b"evil",
            "package/dist/echarts.min.js": MIN_JS,
            "package/LICENSE": b"L",
        }
    )
    assert extract(tarball)[0] == MIN_JS


class FakeNpm:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[str] = []

    def __call__(self, spec: str, dest: Path) -> Path:
        self.calls.append(spec)
        out = dest / "echarts-9.9.9.tgz"
        out.write_bytes(self.data)
        return out


def run_vendor(root: Path, npm: FakeNpm, **kw) -> bool:
    data = package_tarball()
    return vendor(
        root,
        version="9.9.9",
        integrity=integrity_of(data),
        min_sha256=hashlib.sha256(MIN_JS).hexdigest(),
        fetch=npm,
        log=lambda _msg: None,
        **kw,
    )


def test_vendor_writes_caches_and_then_skips(tmp_path):
    npm = FakeNpm(package_tarball())
    assert run_vendor(tmp_path, npm) is True
    paths = Paths(tmp_path, "9.9.9")
    assert paths.min_js.read_bytes() == MIN_JS
    assert b"Apache License" in paths.license.read_bytes()
    assert paths.tarball.read_bytes() == npm.data
    assert npm.calls == ["echarts@9.9.9"]
    assert is_vendored(paths, hashlib.sha256(MIN_JS).hexdigest())
    # Up to date: nothing fetched or written.
    assert run_vendor(tmp_path, npm) is False
    # A changed vendored file is replaced, from the cache, without npm.
    paths.min_js.write_bytes(b"edited")
    assert run_vendor(tmp_path, npm) is True
    assert paths.min_js.read_bytes() == MIN_JS
    assert npm.calls == ["echarts@9.9.9"]


def test_vendor_refuses_a_changed_upstream_tarball(tmp_path):
    good = package_tarball()
    npm = FakeNpm(make_tarball({"package/dist/echarts.min.js": b"evil", "package/LICENSE": b"L"}))
    with pytest.raises(IntegrityError):
        vendor(
            tmp_path,
            version="9.9.9",
            integrity=integrity_of(good),
            min_sha256=hashlib.sha256(MIN_JS).hexdigest(),
            fetch=npm,
            log=lambda _msg: None,
        )
    paths = Paths(tmp_path, "9.9.9")
    assert not paths.min_js.exists()
    assert not paths.tarball.exists()


def test_vendor_refetches_over_a_corrupt_cache(tmp_path):
    paths = Paths(tmp_path, "9.9.9")
    paths.cache_dir.mkdir(parents=True)
    paths.tarball.write_bytes(b"truncated")
    npm = FakeNpm(package_tarball())
    assert run_vendor(tmp_path, npm) is True
    assert npm.calls == ["echarts@9.9.9"]
    assert paths.tarball.read_bytes() == npm.data


def test_vendor_checks_the_bundle_hash(tmp_path):
    data = package_tarball()
    with pytest.raises(IntegrityError, match="sha256"):
        vendor(
            tmp_path,
            version="9.9.9",
            integrity=integrity_of(data),
            min_sha256="0" * 64,
            fetch=FakeNpm(data),
            log=lambda _msg: None,
        )
    assert not Paths(tmp_path, "9.9.9").min_js.exists()
