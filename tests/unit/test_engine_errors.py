"""engine.explain_engine_error: the engine's raw errors as EngineErrors, with a hint where the
engine lacks a part (Podman's init binary, catatonit)."""

from __future__ import annotations

import pytest
import requests
from anna_run.engine import CATATONIT_HINT, explain_engine_error
from anna_run.errors import EngineError
from docker.errors import APIError

URL = "http+docker://localhost/v1.41/containers/create?name=anna-run-0f3c"

# Podman's words, as its users report them (podman#4159, and `lookup init binary` of Podman 4).
PODMAN_NO_INIT = [
    "container-init binary not found on the host: stat /usr/libexec/podman/catatonit: no such file or directory",
    'lookup init binary: exec: "catatonit": executable file not found in $PATH',
]


def _server_error(explanation: str) -> APIError:
    """An APIError as docker-py raises it for the engine's HTTP 500 answer."""
    response = requests.Response()
    response.status_code = 500
    response.url = URL
    response.reason = "Internal Server Error"
    return APIError("500 Server Error", response=response, explanation=explanation)


@pytest.mark.parametrize("explanation", PODMAN_NO_INIT)
def test_podman_without_its_init_binary_names_catatonit(explanation: str) -> None:
    raw = _server_error(explanation)
    assert str(raw).startswith("500 Server Error for ")  # the raw error a run showed before
    error = explain_engine_error(raw, "cannot create the job container")
    assert isinstance(error, EngineError)
    assert error.message.startswith("cannot create the job container: 500 Server Error")
    assert "catatonit" in error.message  # the engine's own words are kept
    assert error.hint == CATATONIT_HINT
    assert "install" in error.hint and "init_path" in error.hint


def test_other_engine_errors_get_no_hint() -> None:
    error = explain_engine_error(_server_error("no space left on device"), "cannot start the job container")
    assert error.message.endswith("no space left on device")
    assert error.hint is None
    assert explain_engine_error(ConnectionError("engine gone")).message == "the container engine failed: engine gone"


def test_an_engine_error_passes_unchanged() -> None:
    original = EngineError("already explained", hint="h")
    assert explain_engine_error(original) is original
