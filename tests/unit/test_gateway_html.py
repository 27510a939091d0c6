"""Link wrapping and the open pixel for HTML emails (gateway.html), checked against the
gateway's own token reader and click handler."""

import html
import re

import pytest

from gateway import tracking
from gateway.config import GatewaySettings
from gateway.html import rewrite_html
from gateway.server import Gateway

KEY = "tracker-key-1"
BASE = "https://t.example.com/"
CLAIMS = {"message_id": "m-1", "subscriber_id": "u_88213", "campaign_id": "spr26", "arm": "B"}

DOC = """<html><body>
<p>Hi <a href="https://shop.example.com/sale?a=1&amp;b=2" class="cta">Sale</a></p>
<a HREF='http://example.com/x'>x</a> <a href=https://example.com/bare>bare</a>
<a href="mailto:help@example.com">mail</a> <a href="tel:+15550100">call</a>
<a href="#top">top</a> <a href="{{view_online}}">view</a>
<a href="https://example.com/unsubscribe?u=1" data-no-track>unsubscribe</a>
<!-- <a href="https://example.com/commented">c</a> -->
<area shape="rect" coords="0,0,1,1" href="https://example.com/map">
</body></html>"""

LINKS = ["https://shop.example.com/sale?a=1&b=2", "http://example.com/x",
         "https://example.com/bare", "https://example.com/map"]


def click(url):
    return f"https://t.example.com/t/c/{tracking.sign_token('c', {**CLAIMS, 'url': url}, KEY)}"


PIXEL = f"https://t.example.com/t/o/{tracking.sign_token('o', CLAIMS, KEY)}.gif"

EXPECTED = f"""<html><body>
<p>Hi <a href="{click(LINKS[0])}" class="cta">Sale</a></p>
<a HREF="{click(LINKS[1])}">x</a> <a href="{click(LINKS[2])}">bare</a>
<a href="mailto:help@example.com">mail</a> <a href="tel:+15550100">call</a>
<a href="#top">top</a> <a href="{{{{view_online}}}}">view</a>
<a href="https://example.com/unsubscribe?u=1" data-no-track>unsubscribe</a>
<!-- <a href="https://example.com/commented">c</a> -->
<area shape="rect" coords="0,0,1,1" href="{click(LINKS[3])}">
<img src="{PIXEL}" width="1" height="1" alt="" \
style="display:block;width:1px;height:1px;border:0"></body></html>"""


def test_exact_output_every_http_link_wrapped_the_rest_untouched():
    result = rewrite_html(DOC, BASE, CLAIMS, KEY)
    assert result.html == EXPECTED
    assert result.links == LINKS
    assert result.skipped == []


def test_tokens_verify_and_seal_the_original_link_and_the_claims():
    result = rewrite_html(DOC, BASE, CLAIMS, KEY)
    hrefs = [html.unescape(h) for h in re.findall(r'(?i)href="([^"]*/t/c/[^"]*)"', result.html)]
    assert len(hrefs) == len(LINKS)
    for href, original in zip(hrefs, LINKS, strict=True):
        token = href.removeprefix("https://t.example.com/t/c/")
        assert tracking.read_token("c", token, [KEY]) == {**CLAIMS, "url": original}
        with pytest.raises(tracking.TokenError):  # a click token is not a pixel token
            tracking.read_token("o", token, [KEY])
    pixel = re.search(r'src="https://t\.example\.com/t/o/([^"]+)\.gif"', result.html)
    assert tracking.read_token("o", pixel.group(1), [KEY]) == CLAIMS
    with pytest.raises(tracking.TokenError):
        tracking.read_token("o", pixel.group(1), ["another-key"])


class _Writer:
    def __init__(self):
        self.records = []

    def write(self, key, value, headers):
        self.records.append((key, value, headers))

    def ready(self):
        return True


def test_the_gateway_redirects_each_wrapped_link_to_its_original_target():
    writer = _Writer()
    gateway = Gateway(GatewaySettings.from_section({"tracker": {"keys": [KEY]}}), writer)
    result = rewrite_html(DOC, BASE, CLAIMS, KEY)
    tokens = re.findall(r'/t/c/([^"]+)"', result.html)
    for token, original in zip(tokens, LINKS, strict=True):
        response = gateway.handle_click(token, {}, {"User-Agent": "test"})
        assert response.status == 302
        assert dict(response.headers)["Location"] == original
    assert len(writer.records) == len(LINKS)


def test_unredirectable_links_are_left_and_reported():
    doc = ('<a href="https://exa mple.com/">space</a>'
           '<a href="https://other.example.org/">other host</a>'
           '<a href="https://shop.example.com/ok">ok</a>')
    result = rewrite_html(doc, BASE, CLAIMS, KEY, redirect_hosts=["example.com"])
    assert result.skipped == ["https://exa mple.com/", "https://other.example.org/"]
    assert result.links == ["https://shop.example.com/ok"]
    assert result.html.startswith('<a href="https://exa mple.com/">space</a>'
                                  '<a href="https://other.example.org/">other host</a>'
                                  f'<a href="{click("https://shop.example.com/ok")}">ok</a>')


def test_pixel_appended_when_there_is_no_body_and_own_links_not_wrapped_again():
    once = rewrite_html('<p><a href="https://example.com/a">a</a></p>', BASE, CLAIMS, KEY)
    assert once.html == (f'<p><a href="{click("https://example.com/a")}">a</a></p>'
                         f'<img src="{PIXEL}" width="1" height="1" alt="" '
                         'style="display:block;width:1px;height:1px;border:0">')
    twice = rewrite_html(once.html, BASE, CLAIMS, KEY)
    assert twice.links == []  # our own /t/ links are not wrapped again


def test_url_in_claims_is_refused():
    with pytest.raises(ValueError, match="url"):
        rewrite_html(DOC, BASE, {**CLAIMS, "url": "https://example.com"}, KEY)
