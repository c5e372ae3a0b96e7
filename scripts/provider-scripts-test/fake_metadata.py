"""A local stand-in for the cloud metadata servers and download hosts the start-up scripts
talk to, for scripts/test-provider-scripts.sh.

GCP (`/computeMetadata/v1/...`, needs `Metadata-Flavor: Google` like the real one):
instance attributes from DIR/attributes.json, the external IP from its `_external_ip` key,
guest attributes written with PUT appended to DIR/guest-attributes. AWS IMDSv2: a token
from `PUT /latest/api/token`, needed for `/latest/meta-data/public-ipv4`. Files under
DIR/files are served at `/files/...`. Every request is appended to DIR/requests.log.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DIR = Path(sys.argv[1])
GCP = "/computeMetadata/v1/"
TOKEN = "fake-imds-token"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        with open(DIR / "requests.log", "a", encoding="utf-8") as log:
            log.write(f"{self.command} {self.path}\n")

    def answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if self.path.startswith(GCP):
            self.send_header("Metadata-Flavor", "Google")
        self.end_headers()
        self.wfile.write(body)

    def gcp_allowed(self) -> bool:
        if self.headers.get("Metadata-Flavor") != "Google":
            self.answer(403, b"Missing Metadata-Flavor:Google header.")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        attributes = json.loads((DIR / "attributes.json").read_text(encoding="utf-8"))
        if self.path.startswith(GCP):
            if not self.gcp_allowed():
                return
            key = self.path[len(GCP):]
            value = None
            if key.startswith("instance/attributes/"):
                value = attributes.get(key[len("instance/attributes/"):])
            elif key == "instance/network-interfaces/0/access-configs/0/external-ip":
                value = attributes.get("_external_ip")
            if value is None:
                self.answer(404, b"not found")
            else:
                self.answer(200, str(value).encode())
        elif self.path.startswith("/files/"):
            path = (DIR / "files" / self.path[len("/files/"):]).resolve()
            if (DIR / "files").resolve() in path.parents and path.is_file():
                self.answer(200, path.read_bytes())
            else:
                self.answer(404, b"not found")
        elif self.path == "/latest/meta-data/public-ipv4":
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                self.answer(401, b"Unauthorized")
            else:
                self.answer(200, str(attributes.get("_public_ipv4", "")).encode())
        else:
            self.answer(404, b"not found")

    def do_PUT(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        guest = GCP + "instance/guest-attributes/"
        if self.path.startswith(guest):
            if not self.gcp_allowed():
                return
            with open(DIR / "guest-attributes", "a", encoding="utf-8") as out:
                out.write(f"{self.path[len(guest):]} {body}\n")
            self.answer(200)
        elif self.path == "/latest/api/token":
            if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                self.answer(400, b"Bad Request")
            else:
                self.answer(200, TOKEN.encode())
        else:
            self.answer(404, b"not found")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    (DIR / "port").write_text(str(server.server_address[1]), encoding="utf-8")
    server.serve_forever()


if __name__ == "__main__":
    main()
