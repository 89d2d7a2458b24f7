"""Multi-step forecasting of a real series (statsmodels' Mauna Loa CO2, monthly, or the yearly
sunspot numbers) with LSTM and GRU, against persistence, seasonal-naive and ARIMA forecasts.

The series is split in time: the last ``test_fraction`` is held out. It is standardised with the
training part's mean and deviation (``rnnjax.train.fit_standardizer``) and cut into windows of
``window`` past values followed by ``horizon`` future ones, each expressed relative to the
window's last value (its anchor) and rescaled to unit deviation: without the anchor, CO2's trend
puts every test window outside the range seen in training and the network cannot extrapolate
(test RMSE 4.4 ppm instead of 0.7 in a trial run). A recurrent layer reads the window and
a dense layer outputs all ``horizon`` future values at once (direct multi-step forecasting),
trained with mean squared error, Adam and gradient clipping. At every test origin (the windows
whose future lies in the held-out part) each method forecasts ``horizon`` steps:

* persistence: the last observed value, ``y_hat[t + h] = y[t]``;
* seasonal naive: the value one season earlier, ``y_hat[t + h] = y[t + h - m * ceil(h / m)]``
  (``m = 11`` years for the sunspot cycle, 12 months for CO2);
* ARIMA (statsmodels, fitted on the training part, then filtered up to each origin);
* LSTM and GRU.

RMSE is reported in the series' own units, overall and by horizon.

    python -m experiments.applications.forecasting [--quick | --full] [--dataset co2]
"""

import os
import warnings

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnnjax
import rnnjax.train as train
from experiments import _common
from experiments.applications import RESULTS, parse_args

SIZES = {
    "quick": {"hidden_size": 32, "epochs": 60, "batch_size": 32, "origin_stride": 2},
    "default": {"hidden_size": 64, "epochs": 150, "batch_size": 32, "origin_stride": 1},
    "full": {"hidden_size": 128, "epochs": 400, "batch_size": 32, "origin_stride": 1},
}
DATASETS = {
    # window, horizon, season and the ARIMA (order, seasonal_order) of each series.
    "sunspots": {"window": 22, "horizon": 11, "season": 11, "arima": ((9, 0, 0), None)},
    "co2": {"window": 36, "horizon": 12, "season": 12, "arima": ((1, 1, 1), (0, 1, 1, 12))},
}
CELLS = {"lstm": rnnjax.lstm, "gru": rnnjax.gru}


def load_series(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(time, values)`` of a statsmodels dataset: yearly sunspots, or monthly-mean CO2 (ppm,
    gaps interpolated)."""
    if name == "sunspots":
        from statsmodels.datasets import sunspots

        data = sunspots.load_pandas().data
        return data["YEAR"].to_numpy(float), data["SUNACTIVITY"].to_numpy(float)
    if name == "co2":
        from statsmodels.datasets import co2

        monthly = co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
        time = monthly.index.year + (monthly.index.month - 1) / 12
        return np.asarray(time, float), monthly.to_numpy(float)
    raise ValueError(f"dataset must be one of {sorted(DATASETS)}; got {name!r}.")


def windows(series: np.ndarray, starts: np.ndarray, window: int, horizon: int):
    """Windows starting at ``starts``, anchored at their last input value: ``(inputs [N, window,
    1], targets [N, horizon], anchors [N, 1])`` with ``inputs + anchor`` and ``targets + anchor``
    the original values (so a trend does not carry test inputs outside the training range)."""
    index = starts[:, None] + np.arange(window + horizon)[None, :]
    cut = series[index] - series[index[:, window - 1 : window]]
    anchors = series[index[:, window - 1 : window]]
    return cut[:, :window, None], cut[:, window:], anchors


def baselines(series: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> dict:
    """Persistence and seasonal-naive forecasts ``[N, horizon]`` from each origin (the index of
    the first forecast step)."""
    steps = np.arange(1, horizon + 1)
    lag = season * np.ceil(steps / season).astype(int)
    return {
        "persistence": np.repeat(series[origins - 1][:, None], horizon, axis=1),
        "seasonal_naive": series[origins[:, None] - 1 + steps[None, :] - lag[None, :]],
    }


def arima_forecasts(series, split, origins, horizon, orders) -> np.ndarray:
    """ARIMA fitted on ``series[:split]``, then re-filtered on ``series[:origin]`` (same
    parameters) to forecast ``horizon`` steps from each origin."""
    from statsmodels.tsa.arima.model import ARIMA

    order, seasonal = orders
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {} if seasonal is None else {"seasonal_order": seasonal}
        fitted = ARIMA(series[:split], order=order, **kwargs).fit()
        return np.stack([fitted.apply(series[:o]).forecast(horizon) for o in origins])


def train_model(name, x, y, config, seed):
    """Fit ``rnn(cell) -> dense(horizon)`` with MSE; returns ``(model, params, history)``."""
    model = rnnjax.serial(rnnjax.rnn(CELLS[name](config["hidden_size"])), rnnjax.dense(y.shape[1]))
    params = model.init(jax.random.key(seed), x.shape[1:])

    def loss(params, batch, key):
        return train.mean_squared_error(model.apply(params, batch[0]), batch[1])

    optimizer = train.with_clipping(optax.adam(config.get("learning_rate", 3e-3)), max_norm=1.0)
    result = train.fit(
        loss, params, optimizer, (x, y), epochs=config["epochs"],
        batch_size=config["batch_size"], seed=seed,
        progress=not os.environ.get("EXPERIMENTS_NO_PROGRESS"),
    )  # fmt: skip
    return model, result.params, result.history


def rmse(forecast: np.ndarray, actual: np.ndarray) -> dict:
    error = np.asarray(forecast, np.float64) - actual
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "rmse_by_horizon": np.sqrt(np.mean(error**2, axis=0)).tolist(),
    }


def run(config: dict, out_dir) -> dict:
    """Train, forecast, score; writes ``results.json``, ``forecast.png`` and ``summary.md``."""
    dataset = DATASETS[config["dataset"]]
    window, horizon, season = dataset["window"], dataset["horizon"], dataset["season"]
    time, series = load_series(config["dataset"])
    split = int(round(len(series) * (1 - config.get("test_fraction", 0.2))))
    scaler = train.fit_standardizer(series[:split])
    z = train.standardize(series, scaler)
    x_train, y_train, _ = windows(z, np.arange(0, split - window - horizon + 1), window, horizon)
    # The anchored differences are much smaller than the series' spread: rescale them to unit
    # deviation (training windows only) so the network sees O(1) inputs and targets.
    spread = float(np.std(y_train))
    x_train, y_train = (x_train / spread).astype(np.float32), (y_train / spread).astype(np.float32)
    origins = np.arange(split, len(series) - horizon + 1, config["origin_stride"])
    x_test, _, anchors = windows(z, origins - window, window, horizon)
    actual = series[origins[:, None] + np.arange(horizon)[None, :]]

    forecasts = baselines(series, origins, horizon, season)
    forecasts["arima"] = arima_forecasts(series, split, origins, horizon, dataset["arima"])
    histories = {}
    for offset, name in enumerate(CELLS):
        model, params, histories[name] = train_model(
            name, x_train, y_train, config, config["seed"] + offset
        )
        predicted = np.asarray(jax.jit(model.apply)(params, (x_test / spread).astype(np.float32)))
        forecasts[name] = train.unstandardize(predicted * spread + anchors, scaler)

    scores = {name: rmse(f, actual) for name, f in forecasts.items()}
    results = {
        "config": {
            **config,
            **dataset,
            "split_index": split,
            "num_train_windows": len(x_train),
            "anchored_spread": spread,
        },
        "series": {"name": config["dataset"], "length": len(series), "test_origins": len(origins)},
        "metrics": scores,
        "best": min(scores, key=lambda n: scores[n]["rmse"]),
        "final_train_loss": {n: h[-1]["train_loss"] for n, h in histories.items()},
    }
    _common.write_json(out_dir, results)
    _figure(time, series, split, origins, forecasts, scores, horizon, out_dir)
    rows = [[name, s["rmse"]] for name, s in sorted(scores.items(), key=lambda i: i[1]["rmse"])]
    _common.write_summary(
        out_dir,
        f"Forecasting {config['dataset']}: {horizon}-step RMSE on the last {len(origins)} origins",
        _common.markdown_table(["method", "RMSE"], rows),
    )
    return results


def _figure(time, series, split, origins, forecasts, scores, horizon, out_dir):
    fig, (ax_series, ax_rmse) = plt.subplots(1, 2, figsize=(12, 4))
    ax_series.plot(time, series, color="black", lw=1, label="series")
    ax_series.axvline(time[split], color="grey", ls=":", label="train | test")
    pick = len(origins) // 2
    span = time[origins[pick] : origins[pick] + horizon]
    for name in ("arima", "lstm", "gru"):
        ax_series.plot(span, forecasts[name][pick], lw=2, label=f"{name} from {span[0]:.0f}")
    ax_series.set(title="test period and one multi-step forecast", xlabel="time")
    ax_series.set_xlim(time[max(split - 3 * horizon, 0)], time[-1])
    ax_series.legend(fontsize=8)
    for name, score in scores.items():
        ax_rmse.plot(np.arange(1, horizon + 1), score["rmse_by_horizon"], marker="o", label=name)
    ax_rmse.set(title="test RMSE by horizon", xlabel="steps ahead", ylabel="RMSE")
    ax_rmse.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "forecast.png")


def _extra(parser):
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="co2")


def main(argv=None):
    args = parse_args("forecasting", __doc__, argv, _extra)
    if args.dataset != "co2" and args.out == RESULTS / "forecasting":
        args.out = RESULTS / f"forecasting_{args.dataset}"
    run({**_common.pick_size(SIZES, args), "dataset": args.dataset}, args.out)


if __name__ == "__main__":
    main()
