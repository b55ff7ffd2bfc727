"""A real S3 API on loopback for tests and benchmarks: moto's server mode over HTTP.

``s3_server()`` starts ``ThreadedMotoServer`` on 127.0.0.1 (a free port chosen by the OS),
creates a bucket and sets exactly the variables the README documents for an S3 store
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``), so the product is configured the way a user configures it: nothing in
our code is patched. Processes started afterwards (``lth`` subprocesses, a Ray started in the
test process, hence its workers) inherit them, as every node of a cluster must have them.
On exit the variables are restored and the server stops (its data lived in memory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

BUCKET = "lth-test"
# Fixed fake credentials: moto accepts any, and a real AWS account is never reached
# (AWS_ENDPOINT_URL points every client at the loopback server).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "lth-test-key", "AWS_SECRET_ACCESS_KEY": "lth-test-secret"}
REGION = "us-east-1"
# Variables that would send a client elsewhere or to other credentials than the ones above.
_CLEARED = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3")


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str

    def uri(self, prefix: str) -> str:
        """An ``s3://`` store URI in the server's bucket."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"


@contextlib.contextmanager
def s3_server(bucket: str = BUCKET) -> Iterator[S3Server]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO: thousands of lines per campaign in a failing test's output
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: the OS picks a free one
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {**CREDENTIALS, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in (*env, *_CLEARED)}
    try:
        for k in _CLEARED:
            os.environ.pop(k, None)
        os.environ.update(env)
        boto3.client("s3").create_bucket(Bucket=bucket)  # reads the variables just set
        yield S3Server(endpoint, bucket)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
