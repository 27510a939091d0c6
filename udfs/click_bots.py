"""Bot clicks that only show up across the events of one message: link scanners (mail
security gateways) click within seconds of delivery, and crawl every link of a message
in a burst. Pure functions; jobs/clean.py finds each click's delivery (an event-time
temporal join in SQL), keeps the clicks of a message and decides when a click is complete
enough to judge (event-time timers).

Stateless signals (scanner user agents, provider bot flags) are set during normalization
by udfs.bots and are kept as they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SOON_AFTER_DELIVERY = "click_soon_after_delivery"
BURST = "click_burst"


@dataclass(frozen=True)
class ClickBotParams:
    # A person needs more than a few seconds to open a mail and click; scanners do not.
    after_delivery_s: float = 10.0
    # This many distinct links of one message clicked within burst_window_s: a crawler.
    burst_window_s: float = 5.0
    burst_min_links: int = 3

    @property
    def burst_window_ms(self) -> int:
        return int(self.burst_window_s * 1000)

    @property
    def after_delivery_ms(self) -> int:
        return int(self.after_delivery_s * 1000)


def burst_indexes(clicks: Sequence[Mapping[str, Any]], params: ClickBotParams) -> set[int]:
    """Indexes of the clicks that lie in some window of burst_window_s holding at least
    burst_min_links distinct URLs. Every click of such a window is flagged, not only the
    ones after the threshold, because the scanner made all of them."""
    order = sorted(range(len(clicks)), key=lambda i: clicks[i]["event_time"])
    flagged: set[int] = set()
    for a, first in enumerate(order):
        start = clicks[first]["event_time"]
        window = [i for i in order[a:]
                  if clicks[i]["event_time"] - start <= params.burst_window_ms]
        if len({clicks[i].get("url") for i in window}) >= params.burst_min_links:
            flagged.update(window)
    return flagged


def judge_clicks(clicks: Sequence[Mapping[str, Any]],
                 params: ClickBotParams) -> list[tuple[bool, str | None]]:
    """(suspected_bot, bot_reason) per click, given every click of the message that can
    matter (those within burst_window_s of each other), each with the time of the
    message's delivery before it in "delivered_at" (None or absent: none known).
    A flag set earlier (user agent, provider) wins, so its more specific reason stays."""
    bursts = burst_indexes(clicks, params)
    verdicts = []
    for i, click in enumerate(clicks):
        delivered_at = click.get("delivered_at")
        if click.get("suspected_bot"):
            verdicts.append((True, click.get("bot_reason")))
        elif (delivered_at is not None
              and 0 <= click["event_time"] - delivered_at <= params.after_delivery_ms):
            verdicts.append((True, SOON_AFTER_DELIVERY))
        elif i in bursts:
            verdicts.append((True, BURST))
        else:
            verdicts.append((False, None))
    return verdicts
