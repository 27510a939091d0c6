"""Tracking for an HTML email: every http(s) link becomes a signed click URL
(``/t/c/<token>``) and an open pixel (``/t/o/<token>.gif``) goes before ``</body>``.

Left alone: ``mailto:``, ``tel:``, in-page anchors (``#...``), relative and template links
(``{{unsubscribe}}``, ``*|UNSUB|*``), anything that is not http(s), links already pointing
at our tracker, and every link whose tag carries a ``data-no-track`` attribute (mark the
unsubscribe link with it: a mail scanner following a wrapped unsubscribe link would record
a click, and the target should be visible as is). Links a redirect would refuse (spaces,
control characters, a host outside ``redirect_hosts``) are left too and listed in
``skipped``, so the sender sees them instead of shipping a link that answers 400.

Only the ``href`` value of ``<a>`` and ``<area>`` start tags is changed; every other byte of
the document stays as it was (the parser locates tags, it does not re-serialise them), so
templates, conditional comments and odd markup survive. Links inside comments, scripts and
styles are not links and stay untouched.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from gateway.tracking import TokenError, check_redirect, tracking_urls

LINK_TAGS = frozenset({"a", "area"})
NO_TRACK_ATTRIBUTE = "data-no-track"
_SCHEME = re.compile(r"^https?:", re.IGNORECASE)
# One attribute of a start tag as browsers split it: name, optionally = and a value that
# is double-quoted, single-quoted or bare.
_ATTRIBUTE = re.compile(
    r"""(?P<name>[^\s"'<>/=]+)(?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")
_TAG_NAME = re.compile(r"<[^\s/>]+")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass
class TrackedHtml:
    html: str
    links: list[str] = field(default_factory=list)    # original URLs now wrapped, in order
    skipped: list[str] = field(default_factory=list)  # http(s) URLs left: not redirectable


class _LinkFinder(HTMLParser):
    """Collects (offset, raw start tag, attributes) of link tags."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self._line_starts = [0]
        for match in re.finditer("\n", text):
            self._line_starts.append(match.end())
        self.found: list[tuple[int, str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in LINK_TAGS:
            line, column = self.getpos()
            raw = self.get_starttag_text() or ""
            self.found.append((self._line_starts[line - 1] + column, raw, attrs))

    handle_startendtag = handle_starttag


def _href_span(raw_tag: str) -> tuple[int, int] | None:
    """Start and end of the first href value (quotes included) in a raw start tag."""
    name = _TAG_NAME.match(raw_tag)
    position = name.end() if name else 1
    for match in _ATTRIBUTE.finditer(raw_tag, position):
        if match.group("name").lower() == "href":
            return match.span("value") if match.group("value") is not None else None
    return None


def rewrite_html(document: str, base_url: str, claims: Mapping[str, Any], key: str | bytes,
                 redirect_hosts: Sequence[str] = ()) -> TrackedHtml:
    """``document`` with its links wrapped and the pixel added, for one recipient.

    ``base_url`` is the gateway's public address; ``claims`` are the recipient's tracking
    claims (``gateway.tracking.CLAIMS`` without ``url``: each link adds its own);
    ``key`` is the first of ``gateway.tracker.keys``; ``redirect_hosts`` should be the
    gateway's ``gateway.tracker.redirect_hosts``, so that no link is wrapped that the
    gateway would refuse to redirect.
    """
    if "url" in claims:
        raise ValueError("claims must not contain 'url': each link seals its own")
    base = base_url.rstrip("/")
    tracker_prefix = f"{base}/t/"
    finder = _LinkFinder(document)
    finder.feed(document)
    finder.close()

    result = TrackedHtml("")
    out: list[str] = []
    done = 0
    for offset, raw_tag, attrs in finder.found:
        names = {name.lower() for name, _ in attrs}
        href = next((value for name, value in attrs if name.lower() == "href"), None)
        # The parser has resolved character references (&amp; -> &): this is the URL a
        # browser would follow, and the one the redirect must lead to.
        url = (href or "").strip()
        if NO_TRACK_ATTRIBUTE in names or not _SCHEME.match(url) \
                or url.startswith(tracker_prefix):
            continue
        span = _href_span(raw_tag)
        if span is None or document[offset:offset + len(raw_tag)] != raw_tag:
            result.skipped.append(url)  # markup we cannot edit in place safely
            continue
        try:
            check_redirect(url, redirect_hosts)
        except TokenError:
            result.skipped.append(url)
            continue
        click = tracking_urls(base, {**claims, "url": url}, key)["click"]
        start, end = offset + span[0], offset + span[1]
        out.append(document[done:start])
        out.append('"' + html.escape(click, quote=True) + '"')
        done = end
        result.links.append(url)
    out.append(document[done:])
    rewritten = "".join(out)

    pixel_url = tracking_urls(base, claims, key)["open"]
    # Width/height attributes as well as CSS: some clients strip style, and display:none
    # makes others skip loading the image at all.
    pixel = (f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
             'style="display:block;width:1px;height:1px;border:0">')
    ends = list(_BODY_END.finditer(rewritten))
    if ends:
        at = ends[-1].start()
        rewritten = rewritten[:at] + pixel + rewritten[at:]
    else:
        rewritten += pixel
    result.html = rewritten
    return result
