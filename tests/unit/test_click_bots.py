from udfs.click_bots import (
    BURST,
    SOON_AFTER_DELIVERY,
    ClickBotParams,
    MessageClicks,
    judge_clicks,
)

P = ClickBotParams(after_delivery_s=10, burst_window_s=5, burst_min_links=3)


def click(t, url, bot=False, reason=None, delivered=None):
    return {"event_id": f"{url}@{t}", "event_time": t, "url": url, "suspected_bot": bot,
            "bot_reason": reason, "delivered_at": delivered}


def test_click_seconds_after_delivery_is_a_scanner():
    scanner = [(True, SOON_AFTER_DELIVERY)]
    assert judge_clicks([click(1_000 + 9_999, "a", delivered=1_000)], P) == scanner
    assert judge_clicks([click(1_000 + 10_000, "a", delivered=1_000)], P) == scanner
    assert judge_clicks([click(1_000 + 10_001, "a", delivered=1_000)], P) == [(False, None)]


def test_unknown_delivery_or_click_before_delivery_is_not_flagged_for_timing():
    assert judge_clicks([click(5_000, "a")], P) == [(False, None)]
    assert judge_clicks([click(5_000, "a", delivered=6_000)], P) == [(False, None)]


def test_burst_over_distinct_links_flags_every_click_of_the_burst():
    clicks = [click(100_000, "a"), click(101_000, "b"), click(104_000, "c"),
              click(200_000, "a")]
    assert judge_clicks(clicks, P) == [(True, BURST)] * 3 + [(False, None)]


def test_repeated_clicks_on_one_link_are_not_a_burst():
    clicks = [click(100_000 + i * 500, "a") for i in range(6)]
    assert judge_clicks(clicks, P) == [(False, None)] * 6


def test_links_spread_wider_than_the_window_are_human():
    clicks = [click(100_000, "a"), click(103_000, "b"), click(106_000, "c")]
    assert judge_clicks(clicks, P) == [(False, None)] * 3


def test_order_of_clicks_does_not_change_the_verdicts():
    clicks = [click(104_000, "c"), click(100_000, "a"), click(101_000, "b")]
    assert judge_clicks(clicks, P) == [(True, BURST)] * 3


def test_earlier_flag_keeps_its_reason():
    assert judge_clicks([click(1_500, "a", True, "ua_scanner", delivered=1_000)], P) == [
        (True, "ua_scanner")]


# MessageClicks: when each click goes out, and with which verdict.
NO_WM = -(2**63)


def book(hold_ms=1_000):
    return MessageClicks(P, hold_ms)


def ids(clicks):
    return [(c["url"], c["suspected_bot"], c["bot_reason"]) for c in clicks]


def test_click_after_its_known_delivery_goes_out_at_once_as_scanner():
    b = book()
    assert b.add_delivery(1_000, now_ms=0, watermark=NO_WM) == []
    assert ids(b.add_click(click(4_000, "a"), now_ms=5, watermark=NO_WM)) == [
        ("a", True, SOON_AFTER_DELIVERY)]
    assert b.pending == []


def test_human_click_waits_for_its_hold_then_goes_out_as_human():
    b = book(hold_ms=1_000)
    b.add_delivery(1_000, now_ms=0, watermark=NO_WM)
    assert b.add_click(click(60_000, "a"), now_ms=100, watermark=NO_WM) == []
    assert b.next_hold_end() == 1_100
    assert b.release(now_ms=1_099, watermark=NO_WM) == []
    assert ids(b.release(now_ms=1_100, watermark=NO_WM)) == [("a", False, None)]
    assert b.next_hold_end() is None


def test_delivery_arriving_within_the_hold_still_flags_the_click():
    b = book()
    assert b.add_click(click(4_000, "a"), now_ms=0, watermark=NO_WM) == []
    assert ids(b.add_delivery(1_000, now_ms=300, watermark=NO_WM)) == [
        ("a", True, SOON_AFTER_DELIVERY)]


def test_third_link_of_a_burst_releases_the_whole_burst_as_bot():
    b = book()
    assert b.add_click(click(100_000, "a"), now_ms=0, watermark=NO_WM) == []
    assert b.add_click(click(101_000, "b"), now_ms=10, watermark=NO_WM) == []
    out = b.add_click(click(102_000, "c"), now_ms=20, watermark=NO_WM)
    assert sorted(ids(out)) == [("a", True, BURST), ("b", True, BURST), ("c", True, BURST)]


def test_evidence_after_a_click_went_out_flags_only_later_clicks():
    b = book(hold_ms=500)
    b.add_click(click(100_000, "a"), now_ms=0, watermark=NO_WM)
    b.add_click(click(101_000, "b"), now_ms=0, watermark=NO_WM)
    assert ids(b.release(now_ms=500, watermark=NO_WM)) == [("a", False, None),
                                                           ("b", False, None)]
    # a and b stay as burst context: the third link is a bot
    assert ids(b.add_click(click(102_000, "c"), now_ms=600, watermark=NO_WM)) == [
        ("c", True, BURST)]


def test_watermark_past_click_plus_window_makes_the_verdict_final_before_the_hold():
    b = book(hold_ms=60_000)
    b.add_click(click(100_000, "a"), now_ms=0, watermark=NO_WM)
    assert b.release(now_ms=10, watermark=104_999) == []
    assert ids(b.release(now_ms=10, watermark=105_000)) == [("a", False, None)]


def test_no_cap_waits_for_the_watermark_only():
    b = book(hold_ms=0)
    b.add_click(click(100_000, "a"), now_ms=0, watermark=NO_WM)
    assert b.next_hold_end() is None
    assert b.release(now_ms=10**12, watermark=NO_WM) == []
    assert ids(b.release(now_ms=0, watermark=105_000)) == [("a", False, None)]


def test_latest_delivery_at_or_before_the_click_counts():
    b = book()
    b.add_delivery(1_000, now_ms=0, watermark=NO_WM)   # deferred, then delivered again
    b.add_delivery(50_000, now_ms=0, watermark=NO_WM)
    assert ids(b.add_click(click(55_000, "a"), now_ms=0, watermark=NO_WM)) == [
        ("a", True, SOON_AFTER_DELIVERY)]
    # a delivery after the click does not explain it
    b2 = book()
    b2.add_delivery(70_000, now_ms=0, watermark=NO_WM)
    assert b2.add_click(click(65_000, "a"), now_ms=0, watermark=NO_WM) == []


def test_state_survives_pickling_its_data():
    # as the clean job keeps it: the lists, not the parameters
    import pickle

    b = book()
    b.add_click(click(100_000, "a"), now_ms=0, watermark=NO_WM)
    b = MessageClicks(P, 1_000, *pickle.loads(pickle.dumps((b.pending, b.recent,
                                                             b.deliveries, b.seen))))
    assert ids(b.release(now_ms=1_000, watermark=NO_WM)) == [("a", False, None)]
    assert b.add_click(click(100_000, "a"), now_ms=1_000, watermark=NO_WM) == []


def test_a_click_again_with_another_delivery_adds_only_the_delivery():
    # the clean job's join gives a click once per delivery of its message
    b = book()
    assert b.add_click(click(60_000, "a"), now_ms=0, watermark=NO_WM,
                       delivered_at=1_000) == []
    assert ids(b.add_click(click(60_000, "a"), now_ms=1, watermark=NO_WM,
                           delivered_at=55_000)) == [("a", True, SOON_AFTER_DELIVERY)]
    assert b.add_click(click(60_000, "a"), now_ms=2, watermark=NO_WM) == []
    assert b.pending == [] and b.deliveries == [1_000, 55_000]


def test_only_a_watermark_after_the_click_makes_it_final():
    # Behind the watermark on arrival: its message's other deliveries may be the next
    # rows, so it waits for the next watermark (or its hold).
    b = book(hold_ms=60_000)
    assert b.add_click(click(100_000, "a"), now_ms=0, watermark=200_000,
                       delivered_at=1_000) == []
    assert ids(b.add_click(click(100_000, "a"), now_ms=0, watermark=200_000,
                           delivered_at=95_000)) == [("a", True, SOON_AFTER_DELIVERY)]
    assert b.add_click(click(300_000, "b"), now_ms=0, watermark=400_000) == []
    assert b.release(now_ms=1, watermark=400_000) == []
    assert ids(b.release(now_ms=1, watermark=400_001)) == [("b", False, None)]
