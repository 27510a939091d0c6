"""udfs.bots: stateless bot / link-scanner / machine-open detection."""

import pytest

from udfs.bots import (
    classify_user_agent,
    detect_bot,
    is_apple_ip,
    native_bot_reason,
    resolve_machine_open,
)

IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Mobile/15E148")
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")


@pytest.mark.parametrize("ua, reason", [
    ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "ua_security_scanner"),
    ("Mimecast-URL-Protect/1.0", "ua_security_scanner"),
    ("Proofpoint URL Defense", "ua_security_scanner"),
    ("Microsoft Office Existence Discovery", "ua_security_scanner"),
    ("Mozilla/5.0 (Windows NT 10.0) Chrome/120 Safari/537.36 SafeLinks", "ua_security_scanner"),
    ("Mozilla/5.0 (compatible; BingPreview/1.0b)", "ua_security_scanner"),
    ("curl/8.5.0", "ua_automation"),
    ("python-requests/2.32.3", "ua_automation"),
    ("Go-http-client/1.1", "ua_automation"),
    ("Java/17.0.2", "ua_automation"),
    ("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/131.0.0.0 Safari/537.36", "ua_automation"),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "ua_crawler"),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "ua_crawler"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0)", "ua_crawler"),
    ("facebookexternalhit/1.1", "ua_crawler"),
    ("WhatsApp/2.23.20.0", "ua_crawler"),
    (CHROME, None),
    (IPHONE_MAIL, None),
    ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)", None),
    ("Mozilla/5.0 (Linux; Android 9; CUBOT X20) AppleWebKit/537.36 Chrome/120 Mobile", None),
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
     "GoogleImageProxy)", None),
    ("Mozilla/5.0", None),
    ("", None),
    (None, None),
])
def test_classify_user_agent(ua, reason):
    assert classify_user_agent(ua) == reason


def test_is_apple_ip():
    assert is_apple_ip("17.58.101.4")
    assert is_apple_ip("::ffff:17.58.101.4")
    assert not is_apple_ip("18.58.101.4")
    assert not is_apple_ip("2001:db8::1")
    assert not is_apple_ip(None)


@pytest.mark.parametrize("kwargs, reason", [
    ({"native_machine_open": True}, "native_machine_open"),
    ({"native_machine_open": False}, None),
    ({"mailgun_bot": "apple"}, "native_bot_apple"),
    ({"mailgun_bot": "gmail"}, "native_bot_gmail"),
    ({"mailgun_bot": "generic"}, "native_bot_generic"),
    ({"mailgun_bot": "Some New-Bot"}, "native_bot_some_new_bot"),
    ({"mailgun_bot": ""}, None),
    ({"mandrill_ua_type": "Robot"}, "native_robot"),
    ({"mandrill_ua_type": "Browser"}, None),
    ({}, None),
])
def test_native_bot_reason(kwargs, reason):
    assert native_bot_reason(**kwargs) == reason


@pytest.mark.parametrize("event_type, ua, ip, native, expected", [
    # native flags win over everything
    ("open", CHROME, "203.0.113.7", "native_bot_generic", (True, "native_bot_generic")),
    ("click", "curl/8", "203.0.113.7", "native_robot", (True, "native_robot")),
    # UA patterns
    ("click", "curl/8.5.0", "203.0.113.7", None, (True, "ua_automation")),
    ("unsubscribe", "Mimecast", "203.0.113.7", None, (True, "ua_security_scanner")),
    # Apple MPP signature and the bare UA elsewhere
    ("open", "Mozilla/5.0", "17.58.63.20", None, (True, "heuristic_apple_mpp")),
    ("open", "Mozilla/5.0", "198.51.100.1", None, (True, "ua_generic_mozilla")),
    ("click", "Mozilla/5.0", "17.58.63.20", None, (True, "ua_generic_mozilla")),
    # humans
    ("open", IPHONE_MAIL, "17.58.63.20", None, (False, None)),
    ("click", CHROME, "203.0.113.7", None, (False, None)),
    ("open", None, None, None, (False, None)),
    # only events a person (or scanner) triggers are checked
    ("delivered", "curl/8.5.0", "203.0.113.7", "native_bot_generic", (False, None)),
    ("complaint", "curl/8.5.0", None, None, (False, None)),
])
def test_detect_bot(event_type, ua, ip, native, expected):
    assert detect_bot(event_type, ua, ip, native_reason=native) == expected


@pytest.mark.parametrize("event_type, ua, ip, native, expected", [
    ("open", CHROME, "203.0.113.7", True, True),
    ("open", "Mozilla/5.0", "17.58.63.20", False, False),   # provider said no: keep it
    ("open", "Mozilla/5.0", "17.58.63.20", None, True),     # MPP signature
    ("open", "Mozilla/5.0", "198.51.100.1", None, None),    # suspicious, but unknown
    ("open", CHROME, "203.0.113.7", None, None),
    ("click", "Mozilla/5.0", "17.58.63.20", True, None),    # not an open: no tri-state
])
def test_resolve_machine_open(event_type, ua, ip, native, expected):
    assert resolve_machine_open(event_type, ua, ip, native) is expected
