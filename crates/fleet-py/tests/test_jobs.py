"""Uploads, jobs and agents against a real manager (no agents: jobs stay queued)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import blendfleet_py
from conftest import PASSWORD, Manager


def project(directory: Path, salt: str) -> dict[str, str]:
    """A project of three files, two with the same contents; `salt` makes it unique."""
    directory.mkdir(parents=True, exist_ok=True)
    blend = directory / "shot.blend"
    blend.write_bytes(b"BLENDER-v304" + salt.encode() + os.urandom(300_000))
    texture = directory / "wood.png"
    texture.write_bytes(b"texture " + salt.encode() + os.urandom(5_000))
    copy = directory / "wood-copy.png"
    copy.write_bytes(texture.read_bytes())
    return {"shot.blend": str(blend), "tex/wood.png": str(texture),
            "tex/wood-copy.png": str(copy)}


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"main_file": "shot.blend", "frames": {"start": 1, "end": 2},
                            "samples": 16, "resolution": {"width": 32, "height": 24}}
    base.update(overrides)
    return base


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def raw_post(manager: Manager, path: str, body: object) -> tuple[int, dict[str, Any]]:
    """POSTs JSON to the manager with Python's own HTTPS client, trusting its CA."""
    context = ssl.create_default_context(cafile=str(manager.state / "tls" / "ca.pem"))
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"{manager.url}/api/v1{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_hash_file(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    assert blendfleet_py.hash_file(str(path)) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert blendfleet_py.hash_file(path) == blendfleet_py.hash_file(str(path))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert blendfleet_py.hash_file(str(empty)) == "sha256:" + hashlib.sha256(b"").hexdigest()
    with pytest.raises(blendfleet_py.FleetError, match="no-such-file"):
        blendfleet_py.hash_file(str(tmp_path / "no-such-file"))


def test_upload_sends_each_content_once(manager: Manager, tmp_path: Path) -> None:
    files = project(tmp_path, "upload")
    sizes = {name: Path(path).stat().st_size for name, path in files.items()}
    calls: list[tuple[int, int]] = []
    report = manager.client().upload_files(files, lambda done, total: calls.append((done, total)))
    distinct_bytes = sizes["shot.blend"] + sizes["tex/wood.png"]
    assert (report.files_total, report.files_uploaded, report.files_skipped) == (3, 2, 1)
    assert report.bytes_uploaded == distinct_bytes
    assert calls, "the progress callback was never called"
    assert calls[-1] == (distinct_bytes, distinct_bytes)
    assert all(total == distinct_bytes and 0 <= done <= total for done, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    stored = manager.blob_files()
    for path in files.values():
        assert sha256(path) in stored
    assert "files_uploaded=2" in repr(report)

    again = manager.client().upload_files(files)
    assert (again.files_total, again.files_uploaded, again.bytes_uploaded,
            again.files_skipped) == (3, 0, 0, 3)
    # The manager replaces a blob's file whenever its contents arrive; nothing arrived.
    assert manager.blob_files() == stored


def test_submit_twice_uploads_nothing_the_second_time(manager: Manager, tmp_path: Path) -> None:
    files = project(tmp_path, "submit")
    client = manager.client()
    assert client.last_upload is None
    first = client.submit(spec(name="first"), files)
    assert client.last_upload is not None and client.last_upload.files_uploaded == 2
    stored = manager.blob_files()
    calls: list[tuple[int, int]] = []
    second = client.submit(spec(name="second"), files, lambda d, t: calls.append((d, t)))
    assert second != first
    report = client.last_upload
    assert report is not None
    assert (report.files_uploaded, report.bytes_uploaded, report.files_skipped) == (0, 0, 3)
    assert manager.blob_files() == stored
    assert all(done == 0 for done, _ in calls)

    job = client.job(second)
    assert job["id"] == second and job["name"] == "second"
    assert job["state"] == "queued"
    assert [frame["frame"] for frame in job["frames"]] == [1, 2]
    listed = {entry["id"]: entry for entry in client.jobs()}
    assert {first, second} <= set(listed)
    assert listed[second]["name"] == "second"


def test_invalid_spec_carries_the_managers_message(manager: Manager, tmp_path: Path) -> None:
    files = project(tmp_path, "invalid")
    client = manager.client()
    bad = spec(samples=0)
    with pytest.raises(blendfleet_py.InvalidRequest) as raised:
        client.submit(bad, files)
    assert raised.value.code == "bad_request"
    # The same spec sent by hand: the exception's text is the manager's message.
    filled = dict(bad, files={name: sha256(path) for name, path in files.items()})
    status, body = raw_post(manager, "/jobs", filled)
    assert status == 400
    assert str(raised.value) == body["message"]
    assert "samples" in str(raised.value)


def test_unknown_spec_field_is_judged_by_the_manager(manager: Manager, tmp_path: Path) -> None:
    files = project(tmp_path, "unknown")
    with pytest.raises(blendfleet_py.InvalidRequest) as raised:
        manager.client().submit(spec(colour="blue"), files)
    assert "colour" in str(raised.value)
    assert raised.value.code == "bad_request"


def test_spec_shape_is_checked_before_uploading(manager: Manager, tmp_path: Path) -> None:
    files = project(tmp_path, "shape")
    client = manager.client()
    before = manager.blob_files()
    with pytest.raises(blendfleet_py.InvalidRequest, match="files"):
        client.submit(spec(files={"shot.blend": "00" * 32}), files)
    with pytest.raises(blendfleet_py.InvalidRequest, match="JSON"):
        client.submit(spec(seed=object()), files)
    with pytest.raises(blendfleet_py.InvalidRequest, match="dict"):
        client.submit([1, 2], files)  # type: ignore[arg-type]
    assert manager.blob_files() == before


def test_missing_local_file(manager: Manager, tmp_path: Path) -> None:
    with pytest.raises(blendfleet_py.FleetError, match="absent.blend"):
        manager.client().upload_files({"shot.blend": str(tmp_path / "absent.blend")})


def test_unknown_job_is_not_found(manager: Manager, tmp_path: Path) -> None:
    client = manager.client()
    for call in (lambda: client.job(987654), lambda: client.cancel(987654),
                 lambda: client.delete(987654), lambda: client.preview(987654, 1),
                 lambda: client.download_exr(987654, 1, str(tmp_path / "x.exr"))):
        with pytest.raises(blendfleet_py.NotFound) as raised:
            call()
        assert raised.value.code == "not_found"
        assert "987654" in str(raised.value)


def test_cancel_preview_download_and_delete(manager: Manager, tmp_path: Path) -> None:
    client = manager.client()
    job_id = client.submit(spec(name="to cancel"), project(tmp_path, "cancel"))
    # Queued, nothing merged: no preview yet, and a frame the job does not render is unknown.
    assert client.preview(job_id, 1) is None
    with pytest.raises(blendfleet_py.NotFound):
        client.preview(job_id, 99)
    with pytest.raises(blendfleet_py.InvalidRequest) as raised:
        client.download_exr(job_id, 1, str(tmp_path / "frame.exr"))
    assert raised.value.code == "conflict"
    assert not (tmp_path / "frame.exr").exists()
    status = client.cancel(job_id)
    assert status["id"] == job_id and status["state"] == "cancelled"
    assert client.job(job_id)["state"] == "cancelled"
    client.delete(job_id)
    with pytest.raises(blendfleet_py.NotFound):
        client.job(job_id)


def test_agents_listing_is_empty_without_agents(manager: Manager) -> None:
    assert manager.client().agents() == []


def test_an_exception_in_progress_propagates(manager: Manager, tmp_path: Path) -> None:
    files = project(tmp_path, "stopped")

    def refuse(done: int, total: int) -> None:
        raise KeyError(f"stop at {done} of {total}")

    with pytest.raises(KeyError, match="stop at"):
        manager.client().upload_files(files, refuse)
    # Whatever arrived before the callback stopped the upload, the next one completes it.
    manager.client().upload_files(files)
    assert {sha256(path) for path in files.values()} <= set(manager.blob_files())
