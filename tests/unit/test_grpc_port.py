"""The gRPC port checked before the workers start (service/grpc_server.require_free_port): the reason given names
what is wrong with the port."""

from __future__ import annotations

import errno
import socket

import pytest

from service.config import ConfigError
from service.grpc_server import require_free_port


def test_a_port_in_use_is_refused_as_taken() -> None:
    with socket.socket() as other:
        other.bind(("", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match=f"DIGITSERVE_GRPC_PORT={port}: .*another process listens on it"):
            require_free_port(port)


def test_a_port_this_process_may_not_use_is_not_called_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: socket.socket, address: tuple) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refused)  # as binding port 80 without root
    with pytest.raises(ConfigError) as error:
        require_free_port(80)
    assert "Permission denied, this process may not use it" in str(error.value)
    assert "another process" not in str(error.value)


def test_a_free_port_passes() -> None:
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    require_free_port(port)
