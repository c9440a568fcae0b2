"""Graceful shutdown: on SIGTERM a worker drains before it stops, so that no client loses a request.

uvicorn on its own stops accepting connections the moment SIGTERM arrives, and closes idle keep-alive connections,
which a client about to reuse one sees as a dropped connection. Draining first, for DIGITSERVE_DRAIN_SECONDS:
- /readyz answers 503, so that load balancers and Kubernetes stop sending new requests here;
- requests are still served, each with `Connection: close`, so that clients give up their keep-alive connections
  after their next answer instead of having them cut under them;
then uvicorn's own graceful shutdown runs: no new connections, requests in flight completed, exit. A second SIGTERM
skips the rest of the drain. Off (0) by default, since BentoML's arbiter passes a Ctrl-C on to its workers as
SIGTERM; the Bentos and the Kubernetes manifests turn it on.
"""

from __future__ import annotations

import asyncio
import logging
import signal

logger = logging.getLogger("bentoml.digitserve")
_draining = False


def draining() -> bool:
    return _draining


def drain_on_sigterm(seconds: float) -> None:
    """Put the drain in front of the SIGTERM handler uvicorn installed. Call it on the worker's event loop, in
    the main thread, once uvicorn runs (a BentoML on_startup hook)."""
    stop = signal.getsignal(signal.SIGTERM)
    if seconds <= 0 or not callable(stop):
        return
    loop = asyncio.get_running_loop()

    def on_sigterm(sig: int, frame) -> None:
        global _draining
        if _draining:  # asked twice: stop now
            stop(sig, frame)
            return
        _draining = True
        logger.info("SIGTERM: draining for %g s (not ready, closing keep-alive connections), then stopping", seconds)
        loop.call_soon_threadsafe(loop.call_later, seconds, stop, sig, None)

    signal.signal(signal.SIGTERM, on_sigterm)
