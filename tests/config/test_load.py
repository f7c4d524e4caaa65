"""gateway.yaml validation: every problem at once, located by file, line and dotted key path."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from gateway.config.load import load_config, parse_config
from gateway.config.model import Branding, Config, Listen, Logging, State, StoreConfig, Timeouts
from gateway.errors import ConfigError
from tests.process import run_command

ROOT = Path(__file__).resolve().parents[2]

# Lines 1-3; anything appended starts at line 4. Nested upstream keys follow at two spaces.
MINIMAL = "listen: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:8081\n"

NO_SIGN_IN = (
    "gateway.yaml: no login section: nobody signs in and no second factor is asked; "
    "the gateway applies only IP and path rules"
)
INLINE_SECRET = (
    "gateway.yaml:6: upstream.secret_header.value: "
    "is written inline; prefer {env: NAME} or {file: PATH}"
)


def problems(text: str) -> list[str]:
    """The problems parse_config reports for `text`, as the operator reads them."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return [str(p) for p in caught.value.problems]


def with_secret(value: str) -> str:
    """MINIMAL plus a secret_header whose `value:` is on line 6."""
    return f"{MINIMAL}  secret_header:\n    name: X-Gateway-Secret\n    value: {value}\n"


# -- a valid config ------------------------------------------------------------------------


def test_minimal_config_with_listen_and_upstream_loads_with_defaults() -> None:
    config = parse_config(MINIMAL)

    assert config.listen == Listen("127.0.0.1", 8080)
    assert config.upstream.url == "http://127.0.0.1:8081"
    assert config.upstream.scheme == "http"
    assert config.upstream.host == "127.0.0.1:8081"
    assert config.upstream.hostname == "127.0.0.1"
    assert config.upstream.port == 8081
    assert config.upstream.host_header == "client"
    assert config.upstream.timeouts == Timeouts(connect=5.0, read=60.0, pool=10.0)
    assert config.upstream.max_connections == 100
    assert config.upstream.keepalive == 30.0
    assert config.upstream.websocket_max_message == 4 * 1024 * 1024
    assert config.upstream.secret_header is None
    assert config.workers == 1
    assert config.public_url == ""
    assert config.trusted_proxies == ()
    assert config.path_prefix == "/_gateway/"
    # Text with no file: paths start from the current folder, and are kept absolute.
    durable = StoreConfig("sqlite", str(Path.cwd() / "gateway.db"))
    assert config.state == State(durable, StoreConfig("memory"))
    assert config.logging == Logging("info", "text", True)
    assert config.branding == Branding("CRM Gateway", "#1f5f8b", "")
    assert config.source == "gateway.yaml"


def test_minimal_config_warns_that_no_sign_in_is_configured() -> None:
    config = parse_config(MINIMAL)

    assert [str(w) for w in config.warnings] == [NO_SIGN_IN]


def test_upstream_port_defaults_to_the_scheme_port() -> None:
    https = parse_config("listen: 127.0.0.1:8080\nupstream: {url: https://crm.internal}\n")
    http = parse_config("listen: 127.0.0.1:8080\nupstream: {url: http://crm.internal}\n")

    assert (https.upstream.port, https.upstream.host) == (443, "crm.internal")
    assert (http.upstream.port, http.upstream.host) == (80, "crm.internal")


def test_full_config_sets_every_key() -> None:
    config = parse_config(
        "listen: 0.0.0.0:9000\n"
        "workers: 4\n"
        "public_url: https://crm.example.com\n"
        "upstream:\n"
        "  url: https://crm.internal:8443\n"
        "  host_header: upstream\n"
        "  timeouts: {connect: 2s, read: 2m, pool: 500ms}\n"
        "  max_connections: 10\n"
        "  keepalive: 1h\n"
        "  websocket: {max_message_size: 64KiB}\n"
        "trusted_proxies: [10.0.0.0/8, '::1/128']\n"
        "path_prefix: /.gw/\n"
        "state:\n"
        "  durable: {type: sqlite, path: /var/lib/gw.db}\n"
        "  shared: {type: memory}\n"
        "logging: {level: debug, format: json, access_log: false}\n"
        "branding: {product_name: Acme, colour: '#ABCDEF', logo_url: /static/logo.svg}\n"
    )

    assert config.listen == Listen("0.0.0.0", 9000)
    assert config.workers == 4
    assert config.public_url == "https://crm.example.com"
    assert config.upstream.url == "https://crm.internal:8443"
    assert config.upstream.port == 8443
    assert config.upstream.host_header == "upstream"
    assert config.upstream.timeouts == Timeouts(connect=2.0, read=120.0, pool=0.5)
    assert config.upstream.max_connections == 10
    assert config.upstream.keepalive == 3600.0
    assert config.upstream.websocket_max_message == 64 * 1024
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.path_prefix == "/.gw/"
    assert config.state.durable == StoreConfig("sqlite", "/var/lib/gw.db")
    assert config.logging == Logging("debug", "json", False)
    assert config.branding == Branding("Acme", "#ABCDEF", "/static/logo.svg")


# -- every problem at once, precisely located -----------------------------------------------


def test_every_problem_is_reported_at_once_with_file_line_and_path() -> None:
    text = (
        "listen: nowhere\nupstream:\n  url: crm.local\n  timeouts:\n    connect: soon\nworkers: 0\n"
    )

    assert problems(text) == [
        "gateway.yaml:1: listen: must be host:port (for example 0.0.0.0:8080 or [::]:8080)"
        " but it's 'nowhere'",
        "gateway.yaml:3: upstream.url: must be an http(s) URL but it's 'crm.local'",
        "gateway.yaml:5: upstream.timeouts.connect: must be a duration such as 30s, 5m, 12h"
        " or 7d but it's 'soon'",
        "gateway.yaml:6: workers: must be at least 1 but it's 0",
    ]


def test_config_error_message_lists_every_problem_one_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("listen: nowhere\nupstream:\n  url: crm.local\n")

    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]
    assert len(caught.value.problems) == 2


def test_problems_are_sorted_by_line_whatever_order_they_were_found_in() -> None:
    # `workers` (line 1) is checked after `upstream` (line 3) but is listed first.
    text = "workers: 100\nlisten: 127.0.0.1:8080\nupstream:\n  url: crm.local\n"

    found = problems(text)

    assert [p.split(":")[1] for p in found] == ["1", "4"]


def test_the_name_given_to_parse_config_is_the_file_in_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("listen: nowhere\nupstream: {url: http://x}\n", "/etc/gw/gateway.yaml")

    assert [str(p) for p in caught.value.problems] == [
        "/etc/gw/gateway.yaml:1: listen: must be host:port (for example 0.0.0.0:8080 or"
        " [::]:8080) but it's 'nowhere'"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("upstream:\n  url: http://x\n", ["gateway.yaml:1: listen: is required"]),
        ("listen: 127.0.0.1:8080\n", ["gateway.yaml:1: upstream: is required"]),
        (
            "workers: 1\n",
            ["gateway.yaml:1: listen: is required", "gateway.yaml:1: upstream: is required"],
        ),
        (
            "listen: 127.0.0.1:8080\nupstream:\n  host_header: client\n",
            ["gateway.yaml:3: upstream: url: is required"],
        ),
    ],
)
def test_missing_required_key_is_named(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


# -- unknown and duplicate keys --------------------------------------------------------------


def test_unknown_top_level_key_is_rejected_with_the_known_keys() -> None:
    assert problems(MINIMAL + "listn: 0.0.0.0:80\n") == [
        "gateway.yaml:4: listn: unknown key (known here: admin, alerts, audit, branding, codes, email, forward_auth, limits, listen,"
        " logging, login, notices, path_prefix, policies, policy_reload, public_url, secrets, sessions, shutdown, sms, state,"
        " trusted_proxies, trusted_proxy_header, upstream, webauthn, workers)"
    ]


def test_unknown_nested_key_is_rejected_with_its_dotted_path() -> None:
    text = MINIMAL + "  timeouts:\n    connect: 5s\n    bogus: 1s\n"

    assert problems(text) == [
        "gateway.yaml:6: upstream.timeouts.bogus: unknown key (known here: connect, pool, read)"
    ]


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("  proxy: true\n", "upstream.proxy"),
        ("  websocket: {max_size: 1MiB}\n", "upstream.websocket.max_size"),
        ("  secret_header: {name: X-S, value: v, hidden: true}\n", "upstream.secret_header.hidden"),
        ("state: {durable: {type: sqlite, file: x.db}}\n", "state.durable.file"),
        ("logging: {colour: true}\n", "logging.colour"),
        ("branding: {color: '#000000'}\n", "branding.color"),
    ],
)
def test_unknown_key_anywhere_is_rejected_with_its_path(extra: str, path: str) -> None:
    found = problems(MINIMAL + extra)

    assert len(found) == 1
    assert f": {path}: unknown key (known here: " in found[0]


def test_duplicate_top_level_key_is_reported_on_its_second_line() -> None:
    assert problems(MINIMAL + "listen: 0.0.0.0:9090\n") == ["gateway.yaml:4: listen: appears twice"]


def test_duplicate_nested_key_is_reported_with_its_path() -> None:
    assert problems(MINIMAL + "  url: http://127.0.0.1:9999\n") == [
        "gateway.yaml:4: upstream.url: appears twice"
    ]


# -- wrong types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- listen\n- upstream\n", "gateway.yaml:1: must be a mapping but it's a list"),
        ("hello\n", "gateway.yaml:1: must be a mapping but it's 'hello'"),
        (
            "listen: 127.0.0.1:8080\nupstream: [http://x]\n",
            "gateway.yaml:2: upstream: must be a mapping but it's a list",
        ),
        (
            "listen: 127.0.0.1:8080\nupstream: http://x\n",
            "gateway.yaml:2: upstream: must be a mapping but it's 'http://x'",
        ),
        (
            "listen: {host: 127.0.0.1, port: 8080}\nupstream: {url: http://x}\n",
            "gateway.yaml:1: listen: must be a string but it's a mapping",
        ),
        (
            MINIMAL + "trusted_proxies: 10.0.0.0/8\n",
            "gateway.yaml:4: trusted_proxies: must be a list but it's '10.0.0.0/8'",
        ),
        (
            MINIMAL + "trusted_proxies: {office: 10.0.0.0/8}\n",
            "gateway.yaml:4: trusted_proxies: must be a list but it's a mapping",
        ),
        (
            MINIMAL + "  timeouts: [5s]\n",
            "gateway.yaml:4: upstream.timeouts: must be a mapping but it's a list",
        ),
        (
            MINIMAL + "  timeouts: {connect: [5s]}\n",
            "gateway.yaml:4: upstream.timeouts.connect: must be a duration but it's a list",
        ),
        (
            MINIMAL + "workers: two\n",
            "gateway.yaml:4: workers: must be a whole number from 1 to 64, or auto, but it's 'two'",
        ),
        (
            MINIMAL + "workers: 1.5\n",
            "gateway.yaml:4: workers: must be a whole number from 1 to 64, or auto, but it's 1.5",
        ),
        (
            MINIMAL + "workers: '2'\n",
            "gateway.yaml:4: workers: must be a whole number from 1 to 64, or auto, but it's '2'",
        ),
        (
            MINIMAL + "workers: [1]\n",
            "gateway.yaml:4: workers: must be a whole number but it's a list",
        ),
        (
            MINIMAL + "logging: {access_log: 'true'}\n",
            "gateway.yaml:4: logging.access_log: must be true or false but it's 'true'",
        ),
        (
            MINIMAL + "logging: {level: loud}\n",
            "gateway.yaml:4: logging.level: must be one of debug, info, warning, error"
            " but it's 'loud'",
        ),
        (
            MINIMAL + "  host_header: both\n",
            "gateway.yaml:4: upstream.host_header: must be one of client, upstream but it's 'both'",
        ),
        (
            MINIMAL + "state: {durable: {type: mysql}}\n",
            "gateway.yaml:4: state.durable.type: must be one of sqlite, postgres but it's 'mysql'",
        ),
        (
            MINIMAL + "state: {durable: {path: x.db}}\n",
            "gateway.yaml:4: state.durable: type: is required",
        ),
    ],
)
def test_value_of_the_wrong_type_is_reported(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_unquoted_yaml_no_is_the_boolean_false() -> None:
    config = parse_config(MINIMAL + "logging: {access_log: no}\n")

    assert config.logging.access_log is False


# -- durations and sizes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("30", 30.0),
        ("'7 s'", 7.0),
    ],
)
def test_duration_is_read_in_seconds(written: str, seconds: float) -> None:
    config = parse_config(MINIMAL + f"  timeouts: {{read: {written}}}\n")

    assert config.upstream.timeouts.read == pytest.approx(seconds)


@pytest.mark.parametrize("written", ["bad", "5 parsecs", "-5s", "5S", "s", "1h30m", "'1:30'"])
def test_unreadable_duration_is_rejected(written: str) -> None:
    found = problems(MINIMAL + f"  timeouts: {{read: {written}}}\n")

    assert len(found) == 1
    assert found[0].startswith(
        "gateway.yaml:4: upstream.timeouts.read: must be a duration such as 30s, 5m, 12h or 7d"
        " but it's "
    )


def test_duration_below_the_minimum_is_rejected() -> None:
    assert problems(MINIMAL + "  keepalive: 500ms\n") == [
        "gateway.yaml:4: upstream.keepalive: must be at least 1 but it's '500ms'"
    ]
    assert problems(MINIMAL + "  timeouts: {connect: 0s}\n") == [
        "gateway.yaml:4: upstream.timeouts.connect: must be at least 0.001 but it's '0s'"
    ]


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("4MiB", 4 * 1024 * 1024),
        ("64KiB", 64 * 1024),
        ("'2 MB'", 2_000_000),
        ("1GiB", 1024**3),
        ("2KB", 2000),
        ("2048", 2048),
        ("4096B", 4096),
    ],
)
def test_size_is_read_in_bytes(written: str, size: int) -> None:
    config = parse_config(MINIMAL + f"  websocket: {{max_message_size: {written}}}\n")

    assert config.upstream.websocket_max_message == size


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("lots", "must be a size such as 64KiB or 4MiB but it's 'lots'"),
        ("4mib", "must be a size such as 64KiB or 4MiB but it's '4mib'"),
        ("1.5MiB", "must be a size such as 64KiB or 4MiB but it's '1.5MiB'"),
        ("1000", "must be at least 1024 but it's 1000"),
        ("1KB", "must be at least 1024 but it's '1KB'"),
    ],
)
def test_bad_size_is_rejected(written: str, message: str) -> None:
    assert problems(MINIMAL + f"  websocket: {{max_message_size: {written}}}\n") == [
        f"gateway.yaml:4: upstream.websocket.max_message_size: {message}"
    ]


# -- workers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_workers_within_bounds_are_accepted(workers: int) -> None:
    assert parse_config(MINIMAL + f"workers: {workers}\n").workers == workers


@pytest.mark.parametrize(
    ("workers", "message"),
    [
        ("0", "must be at least 1 but it's 0"),
        ("-1", "must be at least 1 but it's -1"),
        ("65", "must be at most 64 but it's 65"),
        ("1000", "must be at most 64 but it's 1000"),
    ],
)
def test_workers_out_of_bounds_are_rejected(workers: str, message: str) -> None:
    assert problems(MINIMAL + f"workers: {workers}\n") == [f"gateway.yaml:4: workers: {message}"]


# -- listen ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "host", "port", "shown"),
    [
        ("0.0.0.0:8080", "0.0.0.0", 8080, "0.0.0.0:8080"),
        ("localhost:80", "localhost", 80, "localhost:80"),
        ("gw-1.internal:65535", "gw-1.internal", 65535, "gw-1.internal:65535"),
        ("'[::1]:8080'", "::1", 8080, "[::1]:8080"),
        ("'[::]:443'", "::", 443, "[::]:443"),
        ("127.0.0.1:0", "127.0.0.1", 0, "127.0.0.1:0"),
    ],
)
def test_listen_accepts_host_port_forms(written: str, host: str, port: int, shown: str) -> None:
    config = parse_config(f"listen: {written}\nupstream: {{url: http://x}}\n")

    assert config.listen == Listen(host, port)
    assert str(config.listen) == shown


@pytest.mark.parametrize(
    ("written", "quoted"),
    [
        ("8080", "'8080'"),
        ("127.0.0.1", "'127.0.0.1'"),
        ("':8080'", "':8080'"),
        ("127.0.0.1:65536", "'127.0.0.1:65536'"),
        ("'[::1]'", "'[::1]'"),
        ("'::1:8080'", "'::1:8080'"),
        ("http://127.0.0.1:8080", "'http://127.0.0.1:8080'"),
        ("'127.0.0.1 :8080'", "'127.0.0.1 :8080'"),
    ],
)
def test_listen_rejects_what_is_not_host_port(written: str, quoted: str) -> None:
    assert problems(f"listen: {written}\nupstream: {{url: http://x}}\n") == [
        "gateway.yaml:1: listen: must be host:port (for example 0.0.0.0:8080 or [::]:8080)"
        f" but it's {quoted}"
    ]


def test_unquoted_ipv6_listen_is_a_yaml_problem_on_its_line() -> None:
    # `[` starts a YAML list: the operator must quote '[::1]:8080'.
    found = problems("upstream: {url: http://x}\nlisten: [::1]:8080\n")

    assert len(found) == 1
    assert found[0].startswith("gateway.yaml:2: not valid YAML: ")


# -- trusted_proxies ---------------------------------------------------------------------------


def test_trusted_proxies_accept_networks_and_single_addresses() -> None:
    config = parse_config(MINIMAL + "trusted_proxies: [10.0.0.0/8, 192.0.2.1, 'fd00::/8']\n")

    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("fd00::/8"),
    )


def test_trusted_proxies_with_host_bits_or_garbage_are_each_reported() -> None:
    text = MINIMAL + (
        "trusted_proxies:\n"
        "  - 10.0.0.1/8\n"
        "  - proxy.local\n"
        "  - 192.168.0.0/16\n"
        "  - 'fd00::1/8'\n"
        "  - 010.0.0.0/8\n"
    )

    assert problems(text) == [
        "gateway.yaml:5: trusted_proxies[0]: has host bits set: '10.0.0.1/8'"
        " (write the network address)",
        "gateway.yaml:6: trusted_proxies[1]: must be an IP address or CIDR network"
        " but it's 'proxy.local'",
        "gateway.yaml:8: trusted_proxies[3]: has host bits set: 'fd00::1/8'"
        " (write the network address)",
        "gateway.yaml:9: trusted_proxies[4]: must be an IP address or CIDR network"
        " but it's '010.0.0.0/8'",
    ]


# -- path_prefix ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/_gateway/", "/.gw/", "/auth/gw/", "/_GW-2~x/"])
def test_path_prefix_accepts_slash_delimited_paths(prefix: str) -> None:
    assert parse_config(MINIMAL + f"path_prefix: {prefix}\n").path_prefix == prefix


@pytest.mark.parametrize(
    "prefix",
    [
        "_gateway/",
        "/_gateway",
        "/",
        "//",
        "/a b/",
        "/a//b/",
        "/../",
        "/x/../y/",
        "/gw?/",
        "/gw%2f/",
    ],
)
def test_path_prefix_that_is_not_a_clean_path_is_rejected(prefix: str) -> None:
    assert problems(MINIMAL + f"path_prefix: '{prefix}'\n") == [
        "gateway.yaml:4: path_prefix: must look like /_gateway/ (a path that starts and ends"
        f" with /) but it's {prefix!r}"
    ]


@pytest.mark.parametrize("prefix", ["/./", "/_gateway/./"])
def test_path_prefix_with_a_dot_segment_is_rejected(prefix: str) -> None:
    found = problems(MINIMAL + f"path_prefix: '{prefix}'\n")

    assert found[0].startswith("gateway.yaml:4: path_prefix: must look like /_gateway/")


# -- branding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("colour", "quoted"),
    [
        ("red", "'red'"),
        ("'#fff'", "'#fff'"),
        ("'#1f5f8bff'", "'#1f5f8bff'"),
        ("123456", "'123456'"),
    ],
)
def test_branding_colour_must_be_a_hex_colour(colour: str, quoted: str) -> None:
    assert problems(MINIMAL + f"branding: {{colour: {colour}}}\n") == [
        f"gateway.yaml:4: branding.colour: must be a colour such as #1f5f8b but it's {quoted}"
    ]


def test_unquoted_branding_colour_is_a_yaml_comment_and_reported_as_empty() -> None:
    assert problems(MINIMAL + "branding:\n  colour: #1f5f8b\n") == [
        "gateway.yaml:5: branding.colour: must be a string but it's empty"
    ]


@pytest.mark.parametrize(
    "logo", ["https://crm.example.com/static/logo.svg", "/static/logo.svg", "/logo.png"]
)
def test_branding_logo_url_accepts_https_and_site_paths(logo: str) -> None:
    assert parse_config(MINIMAL + f"branding: {{logo_url: '{logo}'}}\n").branding.logo_url == logo


@pytest.mark.parametrize(
    "logo",
    [
        "http://crm.example.com/logo.svg",
        "//evil.example/logo.svg",
        "javascript:alert(1)",
        "data:image/svg+xml,<svg/>",
        "logo.svg",
    ],
)
def test_branding_logo_url_that_is_not_https_or_a_site_path_is_rejected(logo: str) -> None:
    assert problems(MINIMAL + f"branding: {{logo_url: '{logo}'}}\n") == [
        "gateway.yaml:4: branding.logo_url: must be an https:// URL or a path on this site"
        f" but it's {logo!r}"
    ]


def test_branding_logo_url_with_a_backslash_after_the_slash_is_rejected() -> None:
    # YAML single quotes keep the backslash literal: the value is /\evil.example/logo.svg
    found = problems(MINIMAL + "branding: {logo_url: '/\\evil.example/logo.svg'}\n")

    assert found == [
        "gateway.yaml:4: branding.logo_url: must be an https:// URL or a path on this site"
        " but it's '/\\\\evil.example/logo.svg'"
    ]


# -- upstream and public URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected_url", "host", "hostname", "port"),
    [
        ("http://crm.internal/", "http://crm.internal", "crm.internal", "crm.internal", 80),
        (
            "HTTP://CRM.internal:8080",
            "http://CRM.internal:8080",
            "CRM.internal:8080",
            "crm.internal",
            8080,
        ),
        ("https://10.0.0.5:8443", "https://10.0.0.5:8443", "10.0.0.5:8443", "10.0.0.5", 8443),
        ("'http://[::1]:8081'", "http://[::1]:8081", "[::1]:8081", "::1", 8081),
    ],
)
def test_upstream_url_is_split_into_origin_parts(
    url: str, expected_url: str, host: str, hostname: str, port: int
) -> None:
    upstream = parse_config(f"listen: 127.0.0.1:8080\nupstream:\n  url: {url}\n").upstream

    assert (upstream.url, upstream.host, upstream.hostname, upstream.port) == (
        expected_url,
        host,
        hostname,
        port,
    )


@pytest.mark.parametrize(
    "url",
    [
        "crm.local",
        "ftp://crm.local",
        "http://",
        "http://:8080",
        "http://crm.local:99999",
        "http://crm.local:port",
        "'http://[::1'",
    ],
)
def test_upstream_url_that_is_not_http_is_rejected(url: str) -> None:
    shown = url.strip("'")

    assert problems(f"listen: 127.0.0.1:8080\nupstream:\n  url: {url}\n") == [
        f"gateway.yaml:3: upstream.url: must be an http(s) URL but it's {shown!r}"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://crm.local/app",
        "http://crm.local/app/",
        "http://crm.local?x=1",
        "http://crm.local/#top",
        "http://admin:pw@crm.local",
        "http://admin@crm.local:8080",
    ],
)
def test_upstream_url_with_path_query_or_userinfo_is_refused(url: str) -> None:
    assert problems(f"listen: 127.0.0.1:8080\nupstream:\n  url: '{url}'\n") == [
        "gateway.yaml:3: upstream.url: must be only scheme, host and port (the CRM's address)"
        f" but it's {url!r}"
    ]


@pytest.mark.parametrize("url", ["http://:secret@crm.local", "http://@crm.local"])
def test_upstream_url_with_empty_user_name_userinfo_is_refused(url: str) -> None:
    assert problems(f"listen: 127.0.0.1:8080\nupstream:\n  url: '{url}'\n") == [
        "gateway.yaml:3: upstream.url: must be only scheme, host and port (the CRM's address)"
        f" but it's {url!r}"
    ]


def test_public_url_keeps_only_the_origin() -> None:
    config = parse_config(MINIMAL + "public_url: https://crm.example.com/\n")

    assert config.public_url == "https://crm.example.com"


def test_public_url_with_a_path_is_refused_as_the_users_address() -> None:
    assert problems(MINIMAL + "public_url: https://crm.example.com/app\n") == [
        "gateway.yaml:4: public_url: must be only scheme, host and port (the address users"
        " type) but it's 'https://crm.example.com/app'"
    ]


# -- secrets ------------------------------------------------------------------------------------


def test_secret_from_environment_is_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_GW_TEST_SECRET", "s3cret value")

    config = parse_config(with_secret("{env: CRM_GW_TEST_SECRET}"))

    header = config.upstream.secret_header
    assert header is not None
    assert (header.name, header.value) == ("X-Gateway-Secret", "s3cret value")
    assert [str(w) for w in config.warnings] == [NO_SIGN_IN]


def test_secret_value_is_not_shown_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_GW_TEST_SECRET", "s3cret-value")

    config = parse_config(with_secret("{env: CRM_GW_TEST_SECRET}"))

    assert "s3cret-value" not in repr(config)


def test_secret_from_missing_environment_variable_is_a_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CRM_GW_TEST_SECRET", raising=False)

    assert problems(with_secret("{env: CRM_GW_TEST_SECRET}")) == [
        "gateway.yaml:6: upstream.secret_header.value.env: environment variable"
        " CRM_GW_TEST_SECRET is not set"
    ]


def test_secret_from_empty_environment_variable_is_a_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRM_GW_TEST_SECRET", "")

    assert problems(with_secret("{env: CRM_GW_TEST_SECRET}")) == [
        "gateway.yaml:6: upstream.secret_header.value.env: environment variable"
        " CRM_GW_TEST_SECRET is empty"
    ]


@pytest.mark.parametrize("content", ["s3cret\n", "s3cret\r\n", "s3cret", "s3cret\n\n"])
def test_secret_from_file_is_read_without_its_trailing_newline(
    tmp_path: Path, content: str
) -> None:
    secret = tmp_path / "upstream-secret"
    secret.write_bytes(content.encode())

    config = parse_config(with_secret(f"{{file: {json.dumps(str(secret))}}}"))

    assert config.upstream.secret_header is not None
    assert config.upstream.secret_header.value == "s3cret"


def test_secret_from_missing_file_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "absent"

    assert problems(with_secret(f"{{file: {json.dumps(str(missing))}}}")) == [
        f"gateway.yaml:6: upstream.secret_header.value.file: cannot read {missing}:"
        " No such file or directory"
    ]


def test_secret_from_file_holding_only_a_newline_is_a_problem(tmp_path: Path) -> None:
    secret = tmp_path / "blank"
    secret.write_text("\n")

    assert problems(with_secret(f"{{file: {json.dumps(str(secret))}}}")) == [
        f"gateway.yaml:6: upstream.secret_header.value.file: {secret} is empty"
    ]


def test_inline_secret_is_accepted_with_a_warning() -> None:
    config = parse_config(with_secret("s3cret"))

    assert config.upstream.secret_header is not None
    assert config.upstream.secret_header.value == "s3cret"
    assert [str(w) for w in config.warnings] == [INLINE_SECRET, NO_SIGN_IN]


def test_secret_naming_both_env_and_file_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_GW_TEST_SECRET", "s3cret")

    assert problems(with_secret("{env: CRM_GW_TEST_SECRET, file: /run/secrets/x}")) == [
        "gateway.yaml:6: upstream.secret_header.value: must name exactly one of env or file"
    ]


def test_secret_with_an_unknown_source_is_a_problem() -> None:
    assert problems(with_secret("{vault: kv/gw}")) == [
        "gateway.yaml:6: upstream.secret_header.value.vault: unknown key (known here: env, file)",
        "gateway.yaml:6: upstream.secret_header.value: must name exactly one of env or file",
    ]


def test_secret_header_needs_a_value_and_a_valid_name() -> None:
    assert problems(MINIMAL + "  secret_header: {name: X-Gateway-Secret}\n") == [
        "gateway.yaml:4: upstream.secret_header: value: is required"
    ]
    assert problems(MINIMAL + "  secret_header: {name: 'X Gateway: Secret', value: v}\n") == [
        "gateway.yaml:4: upstream.secret_header.name: must be an HTTP header name"
        " but it's 'X Gateway: Secret'"
    ]


# -- YAML and files ------------------------------------------------------------------------------


def test_invalid_yaml_is_a_problem_with_its_line_number() -> None:
    found = problems("listen: 127.0.0.1:8080\nupstream:\n\turl: http://x\n")

    assert found == [
        "gateway.yaml:3: not valid YAML: found character '\\t' that cannot start any token"
    ]


def test_unclosed_yaml_list_is_a_problem_with_a_line_number() -> None:
    found = problems("listen: 127.0.0.1:8080\ntrusted_proxies: [10.0.0.0/8\nworkers: 1\n")

    assert len(found) == 1
    assert found[0].startswith("gateway.yaml:")
    line = int(found[0].split(":")[1])
    assert line >= 2
    assert ": not valid YAML: " in found[0]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_a_problem(text: str) -> None:
    assert problems(text) == ["gateway.yaml:1: the file is empty"]


def test_file_with_only_a_document_marker_is_reported_as_empty() -> None:
    assert problems("---\n") == ["gateway.yaml:1: the file is empty"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "listen: 127.0.0.1:8080\nupstream:\n",
            "gateway.yaml:2: upstream: must be a mapping but it's empty",
        ),
        (
            MINIMAL + "workers:\n",
            "gateway.yaml:4: workers: must be a whole number from 1 to 64, or auto, but it's empty",
        ),
        (
            MINIMAL + "trusted_proxies:\n",
            "gateway.yaml:4: trusted_proxies: must be a list but it's empty",
        ),
    ],
)
def test_key_without_a_value_is_reported_as_empty(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_missing_file_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing)

    assert [str(p) for p in caught.value.problems] == [f"{missing}: file not found"]


def test_file_that_is_not_utf8_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"listen: 127.0.0.1:8080\nbranding: {product_name: Caf\xe9}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert len(caught.value.problems) == 1
    assert str(caught.value.problems[0]).startswith(f"{path}: cannot read: ")


def test_load_config_names_the_file_in_problems_and_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "workers: 0\n")

    assert load_config(good).source == str(good)
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert [str(p) for p in caught.value.problems] == [
        f"{bad}:4: workers: must be at least 1 but it's 0"
    ]


def test_shipped_example_config_loads_without_problems() -> None:
    config = load_config(ROOT / "gateway.yaml")

    assert isinstance(config, Config)
    assert config.listen == Listen("127.0.0.1", 8080)
    assert config.upstream.url == "http://127.0.0.1:8081"
    assert config.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    # The only warning is the one every config of this version carries.
    assert [w.message for w in config.warnings] == [
        "no login section: nobody signs in and no second factor is asked; "
        "the gateway applies only IP and path rules"
    ]


# -- the command line --------------------------------------------------------------------------


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return run_command("check-config", "-c", str(path), cwd=ROOT)


def test_check_config_exits_0_on_a_good_config(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(MINIMAL)

    result = check_config(path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: OK\n"
    assert f"warning: {path}: no login section" in result.stderr


def test_check_config_accepts_the_shipped_example() -> None:
    result = check_config(ROOT / "gateway.yaml")

    assert result.returncode == 0, result.stderr


def test_check_config_exits_2_and_prints_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("listen: nowhere\nupstream:\n  url: crm.local\nworkers: 0\nbogus: 1\n")

    result = check_config(path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:1: listen: must be host:port (for example 0.0.0.0:8080 or [::]:8080)"
        " but it's 'nowhere'",
        f"{path}:3: upstream.url: must be an http(s) URL but it's 'crm.local'",
        f"{path}:4: workers: must be at least 1 but it's 0",
        f"{path}:5: bogus: unknown key (known here: admin, alerts, audit, branding, codes, email, forward_auth, limits, listen,"
        " logging, login, notices, path_prefix, policies, policy_reload, public_url, secrets, sessions, shutdown, sms, state,"
        " trusted_proxies, trusted_proxy_header, upstream, webauthn, workers)",
        f"{path}: 4 problems",  # "not started" is for `run`: check-config starts nothing
    ]


def test_check_config_exits_2_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    result = check_config(path)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: file not found",
        f"{path}: 1 problem",
    ]


@pytest.mark.parametrize(
    "name", ["Host", "X-Forwarded-For", "x_real_ip", "Transfer-Encoding", "Cookie"]
)
def test_secret_header_may_not_take_a_managed_name(name: str) -> None:
    text = (
        "listen: 127.0.0.1:8080\nupstream:\n  url: http://crm.local\n"
        f"  secret_header:\n    name: {name}\n    value: s3cret-inline\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "gateway.yaml")
    assert [str(p) for p in raised.value.problems] == [
        f"gateway.yaml:5: upstream.secret_header.name: must not be a header the gateway manages but it's {name!r}"
    ]


def test_redis_shared_store_takes_a_url_and_a_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", "redis://:pw@127.0.0.1:6379/2")
    config = parse_config(
        MINIMAL + "state:\n  shared: {type: redis, url: {env: TEST_REDIS_URL}, prefix: 'gw1:'}\n"
    )
    assert config.state.shared.type == "redis"
    assert config.state.shared.url == "redis://:pw@127.0.0.1:6379/2"
    assert config.state.shared.prefix == "gw1:"
    assert "pw" not in repr(config)  # the URL may carry a password


def test_redis_shared_store_needs_a_redis_url() -> None:
    assert problems(MINIMAL + "state:\n  shared: {type: redis}\n") == [
        "gateway.yaml:5: state.shared: url: is required for redis "
        "(redis://host:6379/0, or {env: NAME})"
    ]
    assert problems(MINIMAL + "state:\n  shared: {type: redis, url: 'http://x'}\n") == [
        "gateway.yaml:5: state.shared.url: must start with redis://, rediss:// or unix://"
    ]


# -- audit and the admin listener ------------------------------------------------------------


def test_audit_and_admin_sections_are_read(tmp_path: Path) -> None:
    config = parse_config(
        MINIMAL
        + f"audit: {{file: {tmp_path}/audit.jsonl, keep: 90d}}\nadmin: {{listen: 127.0.0.1:9100}}\n"
    )
    assert (config.audit.file, config.audit.keep) == (f"{tmp_path}/audit.jsonl", 90 * 86400.0)
    assert (config.admin.listen.host, config.admin.listen.port) == ("127.0.0.1", 9100)  # type: ignore[union-attr]
    assert parse_config(MINIMAL).audit.file == "-"  # stdout by default
    assert parse_config(MINIMAL + "audit: {file: 'off'}\n").audit.file == ""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "audit: {file: /no/such/folder/audit.jsonl}\n",
            "gateway.yaml:4: audit.file: the folder of '/no/such/folder/audit.jsonl' does not exist",
        ),
        (
            "audit: {keep: 1h}\n",
            "gateway.yaml:4: audit.keep: must be at least 1d (or 0 to keep every event)",
        ),
        ("admin: {listen: nowhere}\n", "gateway.yaml:4: admin.listen: must be host:port"),
        (
            "admin: {listen: '127.0.0.1:8080'}\n",
            "gateway.yaml:4: admin.listen: must differ from listen: metrics stay off the address "
            "the CRM's users reach",
        ),
    ],
)
def test_audit_and_admin_problems_are_named(extra: str, expected: str) -> None:
    assert problems(MINIMAL + extra)[0].startswith(expected)
