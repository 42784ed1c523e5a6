"""How the cut check scores a half and counts a cut, shared by `cut_check.py` (real timings) and
`cut_power.py` (simulated ones), so that the simulation scores exactly as the check does."""
import statistics as st


def err(pred, meas):
    return (pred - meas) / meas * 100


def half(pred, meas):
    """(mean prediction, mean measurement, error %, noise floor %) of one half over its passes, or
    None with fewer than two timed passes. The floor is `augur eval`'s: each pass's measurement
    predicted by the pass before, the mean error."""
    pairs = [(a, b) for a, b in zip(pred, meas) if a and b]
    if len(pairs) < 2:
        return None
    pm, mm = st.mean(a for a, _ in pairs), st.mean(b for _, b in pairs)
    floor = st.mean(abs(err(pairs[i - 1][1], pairs[i][1])) for i in range(1, len(pairs)))
    return pm, mm, err(pm, mm), floor


def passed(cut, floor=None):
    """Whether both halves of a cut, each (error %, own floor %), are within ±10 % or the floor:
    the half's own, or the run's when `floor` is given."""
    return len(cut) == 2 and all(abs(e) <= max(10, f if floor is None else floor) for e, f in cut)
