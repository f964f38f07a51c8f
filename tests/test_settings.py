"""Settings resolve once, in one direction: defaults → manifest → environment → flags; the key never shows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixmake.errors import ConfigError
from pixmake.manifest import ProviderConfig
from pixmake.settings import Secret, display_url, parse_rate, resolve


def test_defaults_follow_the_documented_provider() -> None:
    settings = resolve(ProviderConfig(), {})
    assert settings.base_url == "https://toapis.com"
    assert settings.api_key is None
    assert settings.concurrency == 4
    assert settings.submit_rate == pytest.approx(1.0)
    assert settings.poll_interval is None  # the documented pace


def test_environment_wins_over_manifest_and_flags_win_over_environment() -> None:
    provider = ProviderConfig(base_url="https://proxy.example", concurrency=2, poll_interval=3.0)
    environ = {"PIXMAKE_BASE_URL": "http://127.0.0.1:9", "PIXMAKE_POLL_INTERVAL": "0.5", "TOAPIS_API_KEY": "sk-a"}
    settings = resolve(provider, environ)
    assert settings.base_url == "http://127.0.0.1:9"
    assert settings.poll_interval == 0.5
    assert settings.concurrency == 2
    assert settings.api_key == Secret("sk-a")
    flagged = resolve(provider, environ, concurrency=7, base_url="http://10.0.0.1")
    assert (flagged.concurrency, flagged.base_url) == (7, "http://10.0.0.1")


def test_the_key_comes_from_the_variable_the_manifest_names() -> None:
    settings = resolve(ProviderConfig(api_key_env="ACME_KEY"), {"TOAPIS_API_KEY": "sk-wrong", "ACME_KEY": "sk-right"})
    assert settings.api_key is not None and settings.api_key.reveal() == "sk-right"


def test_a_key_pasted_with_its_line_end_is_trimmed_and_one_with_a_space_or_control_inside_is_refused() -> None:
    assert resolve(ProviderConfig(), {"TOAPIS_API_KEY": " sk-pasted\r\n"}).api_key == Secret("sk-pasted")
    for bad in ("sk-one two", "sk-a\nsk-b", "sk-\x00nul"):
        with pytest.raises(ConfigError) as caught:
            resolve(ProviderConfig(), {"TOAPIS_API_KEY": bad})
        assert str(caught.value) == "the API key in TOAPIS_API_KEY holds a space or a control character"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("htps://user:s3cret@proxy.example/v1?token=abc", "PIXMAKE_BASE_URL 'htps://proxy.example/v1' is not"),
        ("https//user:s3cret@proxy.example", "PIXMAKE_BASE_URL is not"),
        ("sk-live-s3cret", "PIXMAKE_BASE_URL is not"),  # a key put in the wrong variable
    ],
)
def test_a_bad_base_url_is_named_without_its_credentials(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(ProviderConfig(), {"PIXMAKE_BASE_URL": value})
    assert str(caught.value) == f"{message} an http(s) URL" and "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "http://user:sec#s3cret@127.0.0.1:1",  # a "#" in a password: a traceback quoting its first part
        "http://user:sec/s3cret@127.0.0.1:1",
        "https://toapis.com:s3cret",
        "http://127.0.0.1:99999",
        "http://[::1",
        "http://h:8787#s3cret@x",  # the paths appended would go after the "#"
        "https://h/v1?s3cret=1",
    ],
)
def test_a_base_url_with_no_usable_host_or_port_is_one_error_that_echoes_none_of_it(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(ProviderConfig(), {"PIXMAKE_BASE_URL": value})
    assert str(caught.value).startswith("PIXMAKE_BASE_URL is not a valid base URL") and "s3cret" not in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:p@ss@host:1/v1?q=s3cret", "http://host:1/v1"),  # URL parsers split at the last "@"
        ("https://u@h/a", "https://h/a"),
        ("https://h/a@b", "https://h/a@b"),  # an "@" in the path is not a password's
    ],
)
def test_a_url_is_shown_without_any_of_its_credentials(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_the_key_never_shows_in_repr_or_str() -> None:
    settings = resolve(ProviderConfig(), {"TOAPIS_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings.api_key)


@pytest.mark.parametrize(("text", "per_second"), [("60/min", 1.0), ("5/s", 5.0), ("7200/h", 2.0), ("0.5/sec", 0.5)])
def test_rates_parse(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["60", "60/day", "-1/s", "0/min", "fast"])
def test_bad_rates_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="rate"):
        parse_rate(text)


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan", "inf"])
def test_bad_poll_interval_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="PIXMAKE_POLL_INTERVAL"):
        resolve(ProviderConfig(), {"PIXMAKE_POLL_INTERVAL": value})


@given(st.text(min_size=1, max_size=40))
def test_secret_never_reveals_itself_by_accident(value: str) -> None:
    secret = Secret(value)
    assert secret.reveal() == value
    assert repr(secret) == str(secret) == "Secret('********')"


def test_a_bad_pacing_value_is_named_in_its_own_unit() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(ProviderConfig(), {"PIXMAKE_QUERY_RATE": "0"})
    assert str(caught.value) == "PIXMAKE_QUERY_RATE='0' must be a positive number of queries per second"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("PIXMAKE_LOOKUP_GRACE", "0", "lookup_grace", 0.0),  # trust the first "not found"
        ("PIXMAKE_LOOKUP_GRACE", "12.5", "lookup_grace", 12.5),
        ("PIXMAKE_BACKOFF_BASE", "0.25", "backoff_base", 0.25),
        ("PIXMAKE_BACKOFF_BASE", "0", "backoff_base", None),  # no waiting between retries: refused
        ("PIXMAKE_LOOKUP_GRACE", "-1", "lookup_grace", None),
        ("PIXMAKE_QUERY_RATE", "fast", "query_rate", None),
        ("PIXMAKE_MAX_WAIT", "7200", "max_wait", 7200.0),  # a provider known to queue for hours
        ("PIXMAKE_MAX_WAIT", "0", "max_wait", None),
        ("PIXMAKE_RETRY_WINDOW", "0", "retry_window", 0.0),  # give up after max_attempts alone
        ("PIXMAKE_RETRY_WINDOW", "-5", "retry_window", None),
    ],
)
def test_pacing_variables(variable: str, value: str, field: str, expected: float | None) -> None:
    environ = {variable: value}
    if expected is None:
        with pytest.raises(ConfigError, match=variable):
            resolve(ProviderConfig(), environ)
    else:
        assert getattr(resolve(ProviderConfig(), environ), field) == expected


@pytest.mark.parametrize(
    "url",
    ["https://toapis.com", "https://api.toapis.com/", "http://127.0.0.1:8787", "http://[::1]:9", "http://localhost:1"],
)
def test_a_manifest_may_send_the_key_to_the_provider_or_this_machine(url: str) -> None:
    settings = resolve(ProviderConfig(base_url=url), {"TOAPIS_API_KEY": "sk-a"})
    assert settings.base_url == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://collector.example/v1", "collector.example"),
        ("http://toapis.com", "toapis.com in the clear"),
        ("https://toapis.com.evil.example", "toapis.com.evil.example"),
        ("https://user:s3cret@10.0.0.2", "10.0.0.2"),
    ],
)
def test_a_manifest_cannot_send_the_key_to_another_host(url: str, host: str) -> None:
    """A pull request changing provider.base_url must not get a CI job's key: the environment says where it goes."""
    provider = ProviderConfig(base_url=url, api_key_env="GITHUB_TOKEN")
    with pytest.raises(ConfigError) as caught:
        resolve(provider, {"GITHUB_TOKEN": "ghp_victim"})
    message = str(caught.value)
    assert f"would send the API key to {host}:" in message and "PIXMAKE_BASE_URL=" in message
    assert "s3cret" not in message and "ghp_victim" not in message
    assert (
        resolve(provider, {"GITHUB_TOKEN": "ghp_x", "PIXMAKE_BASE_URL": url}).base_url == url
    )  # the environment's call
    assert resolve(provider, {}).api_key is None  # no key to send (build --emulator): nothing to refuse


def test_a_manifest_cannot_have_another_secret_of_the_job_sent_as_the_key() -> None:
    """The security review: ``api_key_env: AWS_SECRET_ACCESS_KEY`` in a pull request's manifest sent that secret
    to toapis.com as the bearer token. A ToAPIs key starts with sk-; the default variable is the user's own."""
    hostile = ProviderConfig(api_key_env="AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError) as caught:
        resolve(hostile, {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-secret", "TOAPIS_API_KEY": "sk-real"})
    assert "names AWS_SECRET_ACCESS_KEY, which holds no ToAPIs key" in str(caught.value)
    assert "wJalrXUtnFEMI" not in str(caught.value)
    assert resolve(hostile, {"AWS_SECRET_ACCESS_KEY": "sk-a-toapis-key"}).api_key is not None
    assert resolve(ProviderConfig(), {"TOAPIS_API_KEY": "any-form"}).api_key is not None  # the user's variable
    with_url = {"AWS_SECRET_ACCESS_KEY": "wJalr", "PIXMAKE_BASE_URL": "http://127.0.0.1:9"}
    assert resolve(hostile, with_url).api_key is not None  # the environment says where it goes: the user's call
