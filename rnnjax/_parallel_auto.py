"""``parallel_scan(method="auto")``: placeholder while the predictor is fitted."""

CHOICES = ("scan", "deer", "elk")


def parallel_method(cell, params, xs, *, initial_state=None, max_iter=100):
    return "deer"
