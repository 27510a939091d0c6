"""Stateless bot, link-scanner and machine-open detection for one event.

Only what one event shows is used here: the provider's own flag and the user agent/IP.
Timing signals (a click seconds after delivery, every link clicked in a burst) need state
and belong to a later, keyed step.

Reason codes (``bot_reason``; the first matching rule wins, native flags first):

==========================  ==========================================================
native_machine_open         provider says machine open (SendGrid ``sg_machine_open``,
                            SparkPost ``is_prefetched``)
native_bot_apple            Mailgun ``client-info.bot == "apple"`` (Apple MPP)
native_bot_gmail            Mailgun ``client-info.bot == "gmail"``
native_bot_generic          Mailgun ``client-info.bot == "generic"`` (firewall/AV scanner),
                            or any other non-empty Mailgun bot value (``native_bot_<value>``)
native_robot                Mandrill ``user_agent_parsed.type == "robot"`` (weak, per docs)
ua_security_scanner         UA of a secure email gateway / link scanner (Safe Links,
                            Mimecast, Proofpoint, Barracuda, …)
ua_automation               UA of an HTTP library or headless browser (curl, python-requests,
                            HeadlessChrome, …): no mail client sends these
ua_crawler                  UA of a crawler or link-preview fetcher (…bot/, crawler, spider)
heuristic_apple_mpp         open whose UA is the bare ``Mozilla/5.0`` from Apple's 17.0.0.0/8:
                            the Apple Mail Privacy Protection prefetch signature
ua_generic_mozilla          bare ``Mozilla/5.0`` from elsewhere: real clients add a platform
==========================  ==========================================================

Image proxies (``GoogleImageProxy``, Yahoo's) fetch when the person opens the mail, so
they are not flagged; they only hide the person's own IP and UA.
"""

from __future__ import annotations

import ipaddress
import re

from udfs.canonical import parse_ip

# Event types that a person (or a scanner acting for one) causes.
CHECKED_TYPES = frozenset({"open", "click", "unsubscribe"})

_SECURITY_SCANNERS = re.compile(
    r"safelinks|safe ?links|microsoft office (?:existence|protocol) discovery|mimecast"
    r"|proofpoint|urldefense|barracuda|trend ?micro|forcepoint|symantec|messagelabs"
    r"|sophos|zscaler|fortiguard|fortinet|check ?point|cloudmark|ironport|avanan"
    r"|bingpreview|google-safety|virustotal|urlscan",
    re.IGNORECASE,
)
_AUTOMATION = re.compile(
    r"^(?:curl|wget|python-requests|python-urllib|python-httpx|aiohttp|go-http-client"
    r"|java|okhttp|apache-httpclient|libwww-perl|node-fetch|axios|undici|ruby|php"
    r"|postmanruntime|scrapy)\b"
    r"|headlesschrome|phantomjs|puppeteer|playwright|selenium",
    re.IGNORECASE,
)
# "…bot" only when followed by "/", ";", ")" or "-" (Googlebot/2.1, Slackbot-LinkExpanding,
# "AhrefsBot;"), so phone models such as "CUBOT X20" do not match.
_CRAWLER = re.compile(
    r"[a-z]bot[/;)-]|\bbot\b|crawler|spider|slurp|facebookexternalhit|skypeuripreview"
    r"|whatsapp/|telegrambot",
    re.IGNORECASE,
)
_BARE_MOZILLA = re.compile(r"^\s*mozilla/5\.0\s*$", re.IGNORECASE)

_APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")


def classify_user_agent(user_agent: str | None) -> str | None:
    """A ``ua_*`` reason code for a scanner/automation/crawler UA, else None."""
    if not user_agent:
        return None
    if _SECURITY_SCANNERS.search(user_agent):
        return "ua_security_scanner"
    if _AUTOMATION.search(user_agent.strip()):
        return "ua_automation"
    if _CRAWLER.search(user_agent):
        return "ua_crawler"
    return None


def is_apple_ip(ip: str | None) -> bool:
    addr = parse_ip(ip)
    return addr is not None and addr.version == 4 and addr in _APPLE_NETWORK


def _apple_mpp_signature(event_type: str, user_agent: str | None, ip: str | None) -> bool:
    return (event_type == "open" and bool(user_agent) and bool(_BARE_MOZILLA.match(user_agent))
            and is_apple_ip(ip))


def native_bot_reason(mailgun_bot: str | None = None, mandrill_ua_type: str | None = None,
                      native_machine_open: bool | None = None) -> str | None:
    """Reason code from a provider flag (pass whichever the provider has)."""
    if native_machine_open is True:
        return "native_machine_open"
    if mailgun_bot:
        code = re.sub(r"[^a-z0-9]+", "_", mailgun_bot.strip().lower()).strip("_")
        return f"native_bot_{code or 'generic'}"
    if mandrill_ua_type and mandrill_ua_type.strip().lower() == "robot":
        return "native_robot"
    return None


def detect_bot(event_type: str, user_agent: str | None, ip: str | None, *,
               native_reason: str | None = None) -> tuple[bool, str | None]:
    """(suspected_bot, bot_reason) for one event; ``ip`` is the unmasked client IP."""
    if event_type not in CHECKED_TYPES:
        return False, None
    if native_reason:
        return True, native_reason
    ua_reason = classify_user_agent(user_agent)
    if ua_reason:
        return True, ua_reason
    if user_agent and _BARE_MOZILLA.match(user_agent):
        if _apple_mpp_signature(event_type, user_agent, ip):
            return True, "heuristic_apple_mpp"
        return True, "ua_generic_mozilla"
    return False, None


def resolve_machine_open(event_type: str, user_agent: str | None, ip: str | None,
                         native: bool | None) -> bool | None:
    """Tri-state machine_open: the provider's flag when it has one, else True only for the
    Apple MPP signature, else None (unknown). Always None for non-open events."""
    if event_type != "open":
        return None
    if native is not None:
        return native
    if _apple_mpp_signature(event_type, user_agent, ip):
        return True
    return None
