"""Option values become Settings, or one message naming the option (as the admin spelled it) and
the fix; nothing is read from the host."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from certbot_wazo import options
from certbot_wazo.tls import Endpoint


def test_defaults() -> None:
    settings = options.settings()
    assert settings.root == Path("/")
    assert (settings.profile, settings.hostname, settings.probes) == ("auto", None, ())
    assert settings.probe_timeout == options.DEFAULT_PROBE_TIMEOUT
    assert settings.force_profile is False
    assert settings.option_prefix == "--wazo-"


def test_a_relative_root_is_taken_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert options.settings(root="wazo").root == tmp_path / "wazo"


def test_an_empty_root_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^--wazo-root: empty \(give the directory Wazo is "
                       r"installed under, / on the Wazo host itself\)$"):
        options.settings(root="")


def test_the_message_names_the_option_as_the_command_line_spells_it() -> None:
    with pytest.raises(ValueError, match=r"^--root: empty"):
        options.settings(root="", prefix="--")


@pytest.mark.parametrize("profile", ["auto", "legacy", "modern"])
def test_known_profiles(profile: str) -> None:
    assert options.settings(profile=profile).profile == profile


def test_an_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"^--wazo-profile: 'old' is not one of auto, legacy, "
                       r"modern$"):
        options.settings(profile="old")


def test_hostname_is_normalised() -> None:
    assert options.settings(hostname="  Wazo.Example.TEST. ").hostname == "wazo.example.test"


@pytest.mark.parametrize("name", ["a;b.example.test", "*.example.test", "x y.example.test",
                                  "-rf", "", "wazo.example.test\n192.0.2.1 evil"])
def test_a_hostname_that_is_not_a_dns_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"^--hostname: .* is not a DNS name \(give one of the "
                       r"certificate's names, e\.g\. wazo\.example\.com\)$"):
        options.settings(hostname=name, prefix="--")


def test_probes_are_a_comma_separated_list() -> None:
    settings = options.settings(probe="127.0.0.1:443, [::1]:8443,,")
    assert settings.probes == (Endpoint("127.0.0.1", 443), Endpoint("::1", 8443))


def test_an_empty_probe_list_means_the_hosts_own_endpoints() -> None:
    assert options.settings(probe=" , ").probes == ()


@pytest.mark.parametrize("item", ["nowhere", "localhost:443", "127.0.0.1", "127.0.0.1:99999"])
def test_a_bad_probe_names_the_item_and_the_form(item: str) -> None:
    with pytest.raises(ValueError, match=rf"^--wazo-probe: '{item}' is not ADDR:PORT \(e\.g\. "
                       r"127\.0\.0\.1:443 or \[::1\]:443\)$"):
        options.settings(probe=f"127.0.0.1:443,{item}")


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_probe_timeout_must_be_a_positive_number(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"^--wazo-probe-timeout: .* must be a positive number of "
                       r"seconds$"):
        options.settings(probe_timeout=timeout)


def test_probe_timeout_from_text() -> None:
    """certbot's renewal configuration stores option values as text."""
    assert options.settings(probe_timeout="7.5").probe_timeout == 7.5  # type: ignore[arg-type]


def test_force_profile_is_a_boolean() -> None:
    assert options.settings(force_profile=1).force_profile is True  # type: ignore[arg-type]
    assert options.settings(force_profile=None).force_profile is False  # type: ignore[arg-type]
