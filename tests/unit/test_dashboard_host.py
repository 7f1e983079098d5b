"""The standalone dashboard has no login: it listens on loopback only."""

from __future__ import annotations

import pytest

from streamops.dashboard.__main__ import is_loopback, main


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses_are_accepted(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "dashboard.example.com", ""])
def test_other_addresses_are_refused(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert not is_loopback(host)
    with pytest.raises(SystemExit) as exit_:
        main(["--host", host])
    assert exit_.value.code == 2
    assert "/streamops-dashboard/" in capsys.readouterr().err
