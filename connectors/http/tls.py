"""One TLS context per process for every ``HttpClient``.

Building a verifying context loads the whole CA bundle: about 40 ms of CPU and 200,000
small allocations each time. httpx builds one per client unless it is handed one, and a
run opens a client per vendor endpoint group (seven for Klaviyo), a test suite thousands.
A context is safe to share between clients and threads, and every client here asks for
the same one (the CA bundle httpx would pick: ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set,
else certifi's), so it is built once per process and per ``verify_tls`` value.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """The context a client with ``verify_tls = verify`` connects with."""
    return httpx.create_ssl_context(verify=verify)
