"""The `alerts` section of gateway.yaml: defaults, switches, destinations, and every problem
reported with file, line and dotted key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.alerts import (
    AlertMail,
    Alerts,
    NewNetwork,
    Rules,
    SmsVolume,
    Threshold,
    Webhook,
)
from gateway.config.load import parse_config
from gateway.config.messaging import OutboxProvider, SmtpProvider
from gateway.config.model import Config
from gateway.errors import ConfigError

# Lines 1-3; the alerts section starts at line 4.
MINIMAL = "listen: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:8081\n"
HOOK = "https://hooks.example.org/services/T000/B000/key-in-the-path"


def load(alerts: str, extra: str = "") -> Config:
    return parse_config(MINIMAL + alerts + extra)


def problems(alerts: str, extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(alerts, extra)
    return [str(p) for p in caught.value.problems]


def test_a_full_alerts_section_loads_into_frozen_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_HOOK_SECRET", "hook-secret-value")
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-password-value")
    config = load(
        "alerts:\n"
        "  dedup: 1h\n"
        f"  webhook: {{url: {HOOK}, secret: {{env: ALERT_HOOK_SECRET}}, timeout: 3s, retries: 4}}\n"
        "  email:\n"
        "    to: [it@example.org, security@example.org]\n"
        "    provider: {type: smtp, host: mail.example.org, username: gw,"
        " password: {env: SMTP_PASSWORD}, from: gateway@example.org}\n"
        "  rules:\n"
        "    failed_codes: {count: 8, within: 15m}\n"
        "    ip_denied: {count: 200, within: 1m}\n"
        "    new_network: {ipv4_prefix: 16, ipv6_prefix: 48}\n"
        "    sms_volume: {count: 500, within: 1d, per_user: 12}\n"
    )
    assert config.alerts == Alerts(
        dedup=3600.0,
        webhook=Webhook(url=HOOK, secret="hook-secret-value", timeout=3.0, retries=4),
        email=AlertMail(
            to=("it@example.org", "security@example.org"),
            provider=SmtpProvider(
                host="mail.example.org",
                username="gw",
                password="smtp-password-value",
                sender="gateway@example.org",
            ),
        ),
        rules=Rules(
            failed_codes=Threshold(8, 900.0),
            ip_denied=Threshold(200, 60.0),
            new_network=NewNetwork(ipv4_prefix=16, ipv6_prefix=48),
            sms_volume=SmsVolume(count=500, within=86400.0, per_user=12),
        ),
    )
    assert config.alerts.active
    shown = repr(config.alerts)  # a chat webhook's URL is its key: never in a log line
    assert HOOK not in shown and "hook-secret-value" not in shown and "smtp-password" not in shown


def test_a_webhook_alone_turns_every_rule_on_with_its_defaults() -> None:
    alerts = load(f"alerts:\n  webhook: {{url: {HOOK}}}\n").alerts
    assert alerts == Alerts(webhook=Webhook(url=HOOK))
    assert alerts.rules == Rules(
        failed_codes=Threshold(5, 600.0),
        ip_denied=Threshold(50, 300.0),
        new_network=NewNetwork(24, 64),
        sms_volume=SmsVolume(count=100, within=3600.0, per_user=0),
    )
    assert alerts.dedup == 1800.0


def test_without_an_alerts_section_nothing_is_active() -> None:
    assert load("").alerts == Alerts()
    assert not Alerts().active


def test_rules_switch_off_with_false_or_enabled_false() -> None:
    alerts = load(
        "alerts:\n"
        f"  webhook: {{url: {HOOK}}}\n"
        "  rules:\n"
        "    failed_codes: off\n"
        "    ip_denied: {enabled: false, count: 10}\n"
        "    new_network: true\n"
        "    sms_volume: {enabled: true, per_user: 5}\n"
    ).alerts
    assert alerts.rules == Rules(
        failed_codes=None,
        ip_denied=None,
        new_network=NewNetwork(),
        sms_volume=SmsVolume(per_user=5),
    )


def test_every_rule_off_needs_no_destination() -> None:
    alerts = load(
        "alerts:\n  rules: {failed_codes: off, failed_passwords: off, ip_denied: off, "
        "new_network: off, policy_held: off, sms_volume: off}\n"
    ).alerts
    assert not alerts.active


def test_rules_on_without_a_destination_is_a_problem() -> None:
    assert problems("alerts:\n  dedup: 10m\n") == [
        "gateway.yaml:5: alerts: webhook or email: is required while a rule is on "
        "(or switch every rule off)"
    ]


def test_alert_mail_borrows_the_mail_server_of_the_codes() -> None:
    codes_mail = (
        "email:\n  provider: {type: smtp, host: mail.example.org, port: 2525,"
        " security: none, from: codes@example.org}\n"
    )
    alerts = load("alerts:\n  email: {to: it@example.org}\n", codes_mail).alerts
    assert alerts.email == AlertMail(
        to=("it@example.org",),
        provider=SmtpProvider(
            host="mail.example.org", port=2525, security="none", sender="codes@example.org"
        ),
    )


def test_alert_mail_can_go_to_an_outbox_file() -> None:
    alerts = load(
        "alerts:\n  email: {to: [it@example.org], provider: {type: outbox, path: alerts.jsonl}}\n"
    ).alerts
    outbox = OutboxProvider(str(Path.cwd() / "alerts.jsonl"))  # text with no file: from here
    assert alerts.email == AlertMail(("it@example.org",), outbox)


def test_alert_mail_without_any_mail_server_is_a_problem() -> None:
    assert problems("alerts:\n  email: {to: [it@example.org]}\n") == [
        "gateway.yaml:5: alerts.email: provider: is required "
        "(or configure email.provider for codes to share it)"
    ]


def test_a_plain_http_webhook_off_this_host_warns() -> None:
    config = load("alerts:\n  webhook: {url: http://alerts.example.org/in}\n")
    assert (
        "gateway.yaml:5: alerts.webhook.url: is plain http: alerts name users and addresses; "
        "prefer https"
    ) in [str(w) for w in config.warnings]
    local = load("alerts:\n  webhook: {url: http://127.0.0.1:9000/in}\n")
    assert not [w for w in local.warnings if w.path.startswith("alerts")]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "alerts:\n  webhook: {url: https://h.example/x}\n  colour: red\n",
            "gateway.yaml:6: alerts.colour: unknown key (known here: dedup, email, rules, webhook)",
        ),
        (
            "alerts:\n  dedup: soon\n  webhook: {url: https://h.example/x}\n",
            "gateway.yaml:5: alerts.dedup: must be a duration such as 30s, 5m, 12h or 7d "
            "but it's 'soon'",
        ),
        (
            "alerts:\n  webhook: {timeout: 5s}\n",
            "gateway.yaml:5: alerts.webhook: url: is required",
        ),
        (
            "alerts:\n  webhook:\n    url: ftp://h.example/x?key=abc\n",
            "gateway.yaml:6: alerts.webhook.url: must be an http(s) URL",
        ),
        (
            "alerts:\n  webhook:\n    url: https://h.example/x\n    retries: 9\n",
            "gateway.yaml:7: alerts.webhook.retries: must be at most 5 but it's 9",
        ),
        (
            "alerts:\n  webhook:\n    url: https://h.example/x\n    secret: {env: NOT_SET_ANYWHERE}\n",
            "gateway.yaml:7: alerts.webhook.secret.env: environment variable NOT_SET_ANYWHERE "
            "is not set",
        ),
        (
            "alerts:\n  email:\n    to: [it@example.org, nobody]\n"
            "    provider: {type: outbox, path: a.jsonl}\n",
            "gateway.yaml:6: alerts.email.to[1]: must be an e-mail address such as "
            "it@example.com but it's 'nobody'",
        ),
        (
            "alerts:\n  email:\n    to: []\n    provider: {type: outbox, path: a.jsonl}\n",
            "gateway.yaml:6: alerts.email.to: must name at least one address",
        ),
        (
            "alerts:\n  email:\n    to: [it@example.org]\n    provider: {type: http, url: https://x}\n",
            "gateway.yaml:7: alerts.email.provider.type: must be one of smtp, outbox "
            "but it's 'http'",
        ),
        (
            "alerts:\n  webhook: {url: https://h.example/x}\n  rules:\n    lockouts: {count: 3}\n",
            "gateway.yaml:7: alerts.rules.lockouts: unknown key (known here: failed_codes, "
            "failed_passwords, ip_denied, new_network, policy_held, sms_volume)",
        ),
        (
            "alerts:\n  webhook: {url: https://h.example/x}\n  rules:\n"
            "    failed_codes:\n      count: 0\n",
            "gateway.yaml:8: alerts.rules.failed_codes.count: must be at least 1 but it's 0",
        ),
        (
            "alerts:\n  webhook: {url: https://h.example/x}\n  rules:\n"
            "    ip_denied:\n      within: now\n",
            "gateway.yaml:8: alerts.rules.ip_denied.within: must be a duration such as 30s, 5m, "
            "12h or 7d but it's 'now'",
        ),
        (
            "alerts:\n  webhook: {url: https://h.example/x}\n  rules:\n"
            "    new_network:\n      ipv4_prefix: 33\n",
            "gateway.yaml:8: alerts.rules.new_network.ipv4_prefix: must be at most 32 but it's 33",
        ),
        (
            "alerts:\n  webhook: {url: https://h.example/x}\n  rules:\n"
            "    sms_volume:\n      per_user: -1\n",
            "gateway.yaml:8: alerts.rules.sms_volume.per_user: must be at least 0 but it's -1",
        ),
        (
            "alerts:\n  webhook: {url: https://h.example/x}\n  rules:\n"
            "    sms_volume:\n      enabled: maybe\n",
            "gateway.yaml:8: alerts.rules.sms_volume.enabled: must be true or false "
            "but it's 'maybe'",
        ),
        (
            "alerts:\n  webhook: {url: https://h.example/x}\n  rules:\n    failed_codes: 5\n",
            "gateway.yaml:7: alerts.rules.failed_codes: must be a mapping but it's 5",
        ),
    ],
)
def test_each_bad_key_is_a_problem_with_its_line(section: str, expected: str) -> None:
    assert problems(section) == [expected]


def test_a_bad_webhook_url_is_not_quoted_back() -> None:
    [problem] = problems("alerts:\n  webhook: {url: 'https://h.example:port/secret-key'}\n")
    assert problem == "gateway.yaml:5: alerts.webhook.url: must be an http(s) URL"


def test_several_problems_are_reported_at_once() -> None:
    assert problems(
        "alerts:\n"
        "  dedup: never\n"
        "  webhook: {url: https://h.example/x, timeout: 0s}\n"
        "  rules:\n"
        "    failed_codes: {count: many}\n"
    ) == [
        "gateway.yaml:5: alerts.dedup: must be a duration such as 30s, 5m, 12h or 7d "
        "but it's 'never'",
        "gateway.yaml:6: alerts.webhook.timeout: must be at least 0.1 but it's '0s'",
        "gateway.yaml:8: alerts.rules.failed_codes.count: must be a whole number but it's 'many'",
    ]
