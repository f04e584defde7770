"""Chart series thinned for the terminal: short ones untouched, long ones cut to the width with
their extremes kept."""

from tui.plot_points import thinned


def test_short_series_are_drawn_whole():
    points = [(s, float(s)) for s in range(50)]
    assert thinned(points, 40) == points


def test_long_series_keep_each_buckets_extremes_in_step_order():
    points = [(s, 1.0) for s in range(10_000)]
    points[7_777] = (7_777, 50.0)  # a spike
    points[1_234] = (1_234, -3.0)  # a dip
    kept = thinned(points, 80)
    assert len(kept) <= 4 * 80
    assert (7_777, 50.0) in kept and (1_234, -3.0) in kept
    assert [s for s, _ in kept] == sorted(s for s, _ in kept)
    assert kept[0][0] == 0
