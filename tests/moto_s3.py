"""A real S3 protocol server on loopback for the shared-store tests (issue 16): moto's
``ThreadedMotoServer`` (the server s3fs tests itself against), one bucket, test credentials.

Imported by the shared-store test modules (``from moto_s3 import S3Server, s3_server``).
Clients find it through the standard ``AWS_ENDPOINT_URL`` (botocore) set for the session, or
through ``S3Server.env`` in a subprocess.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    """A running moto S3 server: ``endpoint`` (http://127.0.0.1:PORT) and ``bucket``."""

    endpoint: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """The environment an S3 client (s3fs/botocore) needs to use this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_MAX_ATTEMPTS": "2"}

    def url(self, prefix: str | None = None) -> str:
        """``s3://bucket/<prefix>``, a fresh prefix when none is given (test isolation)."""
        return f"s3://{self.bucket}/{prefix or uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (a free port) with one bucket, for the whole session.

    The credentials and the endpoint are put in ``os.environ`` for the session (botocore reads
    ``AWS_ENDPOINT_URL``) and restored at the end.
    """
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # `make test` installs both
        import moto.server as moto_server
        import s3fs
    else:
        moto_server = pytest.importorskip("moto.server")
        s3fs = pytest.importorskip("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    srv = S3Server(f"http://{host}:{port}", "goenhance-team")
    saved = {k: os.environ.get(k) for k in srv.env}
    os.environ.update(srv.env)
    try:
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        if not fs.exists(srv.bucket):  # moto's state is per process: one bucket for all
            fs.mkdir(srv.bucket)
        yield srv
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
