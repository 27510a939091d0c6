from udfs.click_bots import BURST, SOON_AFTER_DELIVERY, ClickBotParams, judge_clicks

P = ClickBotParams(after_delivery_s=10, burst_window_s=5, burst_min_links=3)


def click(t, url, bot=False, reason=None, delivered=None):
    return {"event_time": t, "url": url, "suspected_bot": bot, "bot_reason": reason,
            "delivered_at": delivered}


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
