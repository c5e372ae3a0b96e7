"""Client of the BlendFleet manager's user API (the Rust crate fleet-client, via pyo3).

Every call that touches the network or disk releases the GIL and blocks the calling thread
until it is done; run them in a worker thread inside Blender.
"""

from collections.abc import Callable
from os import PathLike
from typing import Any, final

__version__: str

class FleetError(Exception):
    """Base of every error the module raises."""

    code: str | None
    """The manager's error code (`not_found`, `bad_request`, ...) or None."""

class ConnectionFailed(FleetError):
    """The manager cannot be reached: refused, timed out, or the TLS handshake failed."""

class PinMismatch(ConnectionFailed):
    """The manager's certificate does not chain to the pinned CA fingerprint."""

class AuthenticationFailed(FleetError):
    """Wrong user name or password (401)."""

class RateLimited(FleetError):
    """Too many failed attempts from this address (429)."""

    retry_after: float | None
    """Seconds to wait before trying again, when the manager said."""

class NotFound(FleetError):
    """Unknown job, frame or agent (404)."""

class InvalidRequest(FleetError):
    """Refused as invalid (400 and other 4xx, or bad arguments); the manager's message."""

class ServerError(FleetError):
    """Anything else from the manager (5xx, an answer the module does not understand)."""

def hash_file(path: str | PathLike[str]) -> str:
    """The SHA-256 of a file's contents as `sha256:<64 hex digits>`."""

def parse_connection_string(text: str) -> dict[str, str]:
    """`{"url", "user", "ca_fingerprint"}` of `https://USER@HOST:PORT/#ca=sha256:...`."""

@final
class UploadReport:
    """What an upload sent."""

    files_total: int
    """Entries in the file map."""
    files_uploaded: int
    """Distinct contents sent."""
    bytes_uploaded: int
    """Bytes of contents sent."""
    files_skipped: int
    """Entries not sent (on the manager already, or the same content as another entry);
    always `files_total - files_uploaded`."""

@final
class Client:
    """A client of one manager; constructing it sends nothing."""

    def __new__(
        cls,
        url: str,
        user: str,
        password: str,
        ca_fingerprint: str,
        timeout: float = 30.0,
    ) -> Client: ...
    @staticmethod
    def from_connection_string(text: str, password: str, timeout: float = 30.0) -> Client: ...
    @property
    def url(self) -> str:
        """The manager's base URL, `https://host:port`."""
    @property
    def user(self) -> str:
        """The user this client signs in as."""
    @property
    def last_upload(self) -> UploadReport | None:
        """What the last `upload_files` or `submit` of this client sent."""
    def info(self) -> dict[str, Any]:
        """`{server, version, api_version, agents_online}`; use it to test a connection."""
    def upload_files(
        self,
        files: dict[str, str],
        progress: Callable[[int, int], None] | None = None,
    ) -> UploadReport:
        """Hashes `files` (job path -> local path) and uploads the contents the manager
        lacks. `progress(bytes_done, bytes_total)` runs in the calling thread, at most about
        ten times a second; an exception from it stops the upload and propagates."""
    def submit(
        self,
        spec: dict[str, Any],
        files: dict[str, str],
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Uploads what is missing of `files`, creates the job from `spec` (the task spec
        without "files", which is filled from the hashes) and returns the job's id."""
    def job(self, job_id: int) -> dict[str, Any]: ...
    def jobs(self) -> list[dict[str, Any]]: ...
    def agents(self) -> list[dict[str, Any]]: ...
    def cancel(self, job_id: int) -> dict[str, Any]: ...
    def delete(self, job_id: int) -> None: ...
    def preview(self, job_id: int, frame: int) -> bytes | None:
        """PNG of what is merged of the frame so far; None while nothing is."""
    def download_exr(self, job_id: int, frame: int, path: str | PathLike[str]) -> None: ...
    def download_image(self, job_id: int, frame: int, path: str | PathLike[str]) -> None: ...
