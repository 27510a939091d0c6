"""Bot clicks that only show up across the events of one message: link scanners (mail
security gateways) click within seconds of delivery, and crawl every link of a message
in a burst. Pure logic: judge_clicks gives the verdicts; MessageClicks keeps one message's
clicks and deliveries and decides when each click goes out. jobs/clean.py holds one
MessageClicks per message as keyed state and calls it on each element and timer.

Stateless signals (scanner user agents, provider bot flags) are set during normalization
by udfs.bots and are kept as they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass
class MessageClicks:
    """The clicks and deliveries of one message seen so far, and when each pending click
    may go out. The clean job keeps one per message key (pickled keyed state) and calls
    these methods from its operator; they return the clicks to emit now, each judged.

    A click goes out as soon as its verdict can no longer change:
    * at once when it is already a bot (a provider/user-agent flag, its delivery seconds
      before it, a burst among the clicks seen): more clicks or deliveries only ever add
      bot evidence, never remove it;
    * when the watermark passes click time + burst window: every click that could form a
      burst with it, and its delivery, has arrived (the verdict of an event-time run).
      Only a watermark that came after the click counts: the click reaches the operator
      once per known delivery of its message (rows of a join), and the rows behind the
      first one come before the next watermark;
    * else after `hold_ms` of processing time, with the verdict it has by then (human,
      unless evidence came in meanwhile): the latency cap. In a live stream the
      watermark trails the newest event by the out-of-orderness, so without this cap
      every human click would wait out-of-orderness + burst window. Evidence that
      arrives after a click went out cannot revise it (the clean stream is
      append-only); it still flags the clicks that come after. hold_ms = 0: no cap.

    While a job catches up on a backlog, the watermark moves far faster than the clock,
    so clicks go out by the event-time rule and the verdicts are those of the event-time
    run; the cap only decides for clicks that arrive in real time."""

    params: ClickBotParams
    hold_ms: int
    pending: list[dict] = field(default_factory=list)
    recent: list[dict] = field(default_factory=list)      # emitted, burst context
    deliveries: list[int] = field(default_factory=list)   # delivery event times
    seen: list[str] = field(default_factory=list)         # event ids of the clicks taken

    def add_click(self, click: dict, now_ms: int, watermark: int,
                  delivered_at: int | None = None) -> list[dict]:
        """A click, with one delivery time of its message (None: none known). The same
        click may come again with another delivery: then only the delivery is new."""
        out = [] if delivered_at is None else self.add_delivery(delivered_at, now_ms,
                                                                watermark)
        if click["event_id"] in self.seen:
            return out
        self.seen.append(click["event_id"])
        self.pending.append(dict(click, hold_until=now_ms + self.hold_ms,
                                 arrived_under=watermark))
        return out + self.release(now_ms, watermark)

    def add_delivery(self, event_time: int, now_ms: int, watermark: int) -> list[dict]:
        if event_time in self.deliveries:
            return []
        self.deliveries.append(event_time)
        return self.release(now_ms, watermark)

    def release(self, now_ms: int, watermark: int) -> list[dict]:
        """The pending clicks whose verdict is final or whose hold is over, judged; they
        move to the burst context."""
        if not self.pending:
            return []
        window = self.params.burst_window_ms
        context = self.recent + self.pending
        for c in context:
            c["delivered_at"] = self._delivery_before(c["event_time"])
        verdicts = judge_clicks(context, self.params)
        out, waiting = [], []
        for click, (bot, reason) in zip(self.pending, verdicts[len(self.recent):],
                                        strict=True):
            final = (click["event_time"] + window <= watermark
                     and watermark > click["arrived_under"])
            if bot or final or (self.hold_ms > 0 and click["hold_until"] <= now_ms):
                click["suspected_bot"], click["bot_reason"] = bot, reason
                out.append(click)
            else:
                waiting.append(click)
        self.pending = waiting
        self.recent = [c for c in self.recent + out
                       if c["event_time"] >= watermark - 2 * window]
        return out

    def next_hold_end(self) -> int | None:
        """Processing time at which the earliest pending hold ends (None: no cap or
        nothing pending)."""
        if self.hold_ms <= 0 or not self.pending:
            return None
        return min(c["hold_until"] for c in self.pending)

    def _delivery_before(self, t: int) -> int | None:
        """The latest delivery at or before t (what an event-time temporal join gives)."""
        return max((d for d in self.deliveries if d <= t), default=None)
