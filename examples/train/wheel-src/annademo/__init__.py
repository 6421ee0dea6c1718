"""Least-squares helpers for the anna-run train example (pure Python, deterministic)."""

__version__ = "0.1.0"


def fit_line(xs, ys):
    """Fit y = slope * x + intercept by ordinary least squares.

    Returns a dict with slope, intercept, r2 (coefficient of determination) and n.
    Raises ValueError for fewer than two points or when all x are equal.
    """
    xs = [float(x) for x in xs]
    ys = [float(y) for y in ys]
    n = len(xs)
    if n != len(ys):
        raise ValueError("xs and ys differ in length")
    if n < 2:
        raise ValueError("need at least two points")
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all x values are equal")
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2, "n": n}


def predict(model, x):
    """Predict y for x with a model returned by fit_line."""
    return model["slope"] * float(x) + model["intercept"]
