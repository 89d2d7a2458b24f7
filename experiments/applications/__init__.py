"""Applications: rnnjax end to end on data that exists offline, each against a simple baseline.

``python -m experiments.applications.<name> [--quick | --full] [--out DIR] [--seed N]`` writes
``results.json`` (metrics, configuration, machine stamp), PNG figures and ``summary.md`` under
``experiments/results/applications/<name>/``. ``--quick`` finishes in well under 3 minutes on 2
CPU cores. Every model trains with ``rnnjax.train`` (optax with gradient clipping, masked losses,
the ``fit`` loop and its progress bar).

* ``forecasting``: sunspot numbers (or Mauna Loa CO2) from statsmodels, LSTM and GRU multi-step
  forecasts against persistence, seasonal-naive and ARIMA.
* ``digits``: scikit-learn's 8x8 digits read row by row (8 steps) and pixel by pixel (64 steps),
  vanilla RNN vs LSTM vs GRU.
* ``char_lm``: a character language model on the Python standard library's docstrings, bits per
  character against a unigram model, temperature sampling.
* ``ecg``: bidirectional GRU on synthetic ECG-like recordings (normal rhythm vs irregular beats).
* ``dates_seq2seq``: an encoder-decoder translating dates in words to ISO form, without
  attention and with Bahdanau and Luong attention (:func:`rnnjax.bahdanau_attention`,
  :func:`rnnjax.luong_attention`).
"""

from pathlib import Path

from experiments import _common

RESULTS = _common.RESULTS / "applications"


def parse_args(name: str, description: str | None, argv=None, extra=None):
    """``_common.parse_args`` for ``experiments.applications.<name>``, results in
    ``experiments/results/applications/<name>`` unless ``--out`` says otherwise."""
    args = _common.parse_args(f"applications.{name}", description, argv, extra)
    if Path(args.out) == _common.RESULTS / f"applications.{name}":
        args.out = RESULTS / name
    return args
