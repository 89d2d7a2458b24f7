"""Write ``docs/applications.md`` from the committed default-size results of every application.

Reads ``experiments/results/applications/<name>/results.json`` (written by each application's
default-size run) and writes the page: one table of every result with its spread over seeds, its
baselines, the issue's target and the wall time, then a section per application with its figures
(linked where the docs hook serves them). Numbers on the page come only from those JSON files.

    python -m experiments.applications.report
"""

import json
from pathlib import Path

from experiments import _common
from experiments.applications import RESULTS, _runs

PAGE = _common.REPOSITORY / "docs" / "applications.md"
FIGURE_FILES = {  # results folder -> figure files drawn by its run
    "digits": ["digits.png"],
    "ecg": ["ecg.png"],
    "forecasting": ["forecast.png"],
    "forecasting_sunspots": ["forecast.png"],
    "char_lm": ["char_lm.png"],
    "dates_seq2seq": ["curves.png", "attention.png"],
}


def load(name: str) -> dict | None:
    """The committed default-size ``results.json`` of application folder ``name``, or None when
    there is none (or only one from before the runs over seeds, which lacks ``seconds``)."""
    path = RESULTS / name / "results.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if "seconds" in data and data["config"].get("size") == "default" else None


def figures() -> dict[str, list[str]]:
    """Each application's figures as links from this page: the docs hook (``docs/hooks.py``)
    serves every committed results figure as ``results/<folder>/<file>``."""
    links = {}
    for name, files in FIGURE_FILES.items():
        if load(name) is not None:
            links[name] = [f"results/applications/{name}/{file}" for file in files
                           if (RESULTS / name / file).exists()]  # fmt: skip
    return links


def _total(seconds: dict) -> str:
    return _runs.minutes(sum(seconds["values"]))


def rows(results: dict[str, dict | None]) -> list[list[str]]:
    """The summary table: application, model, metric (mean ± std (min-max)), baselines, target,
    met, time (total over seeds)."""
    table = []
    digits = results.get("digits")
    if digits:
        base = digits["baselines"]["logistic_regression"]
        for view in ("rows", "pixels"):
            rnn = digits["test_accuracy"][f"{view}/rnn"]["mean"]
            for cell in ("rnn", "lstm", "gru"):
                stats = digits["test_accuracy"][f"{view}/{cell}"]
                if cell == "rnn":
                    target, met = "(the foil)", ""
                elif view == "rows":
                    target = "≥ 0.975 and > logistic"
                    met = _yes(stats["mean"] >= 0.975 and stats["mean"] > base)
                else:
                    target = "≥ 0.95 and > RNN"
                    met = _yes(stats["mean"] >= 0.95 and stats["mean"] > rnn)
                table.append([f"digits, {view}", cell.upper(), f"accuracy {_runs.show(stats)}",
                              f"logistic {base:.3f}", target, met,
                              _total(digits["seconds"][f"{view}/{cell}"])])  # fmt: skip
    for name, label in (("forecasting", "CO2"), ("forecasting_sunspots", "sunspots")):
        data = results.get(name)
        if not data:
            continue
        metrics = data["metrics"]
        arima = metrics["arima"]["rmse"]
        naive = min(metrics["seasonal_naive"]["rmse"], metrics["persistence"]["rmse"])
        for cell in ("lstm", "gru"):
            stats = data["rmse_over_seeds"][cell]
            if name == "forecasting":
                target, met = "LSTM or GRU ≤ 1.05 × ARIMA", _yes(stats["mean"] <= 1.05 * arima)
            else:
                target, met = "< seasonal naive, persistence", _yes(stats["mean"] < naive)
            table.append([f"forecasting, {label}", cell.upper(),
                          f"RMSE {_runs.show(stats, 3)}",
                          f"ARIMA {arima:.3f}, seasonal naive "
                          f"{metrics['seasonal_naive']['rmse']:.3f}, persistence "
                          f"{metrics['persistence']['rmse']:.3f}",
                          target, met, _total(data["seconds"][cell])])  # fmt: skip
    ecg = results.get("ecg")
    if ecg:
        stats = ecg["test_accuracy"]
        table.append(["ECG-like", "bidirectional GRU",
                      f"accuracy {_runs.show(stats)}; sensitivity "
                      f"{_runs.show(ecg['sensitivity'])}; specificity "
                      f"{_runs.show(ecg['specificity'])}",
                      f"logistic (raw) {ecg['baselines']['logistic_regression_raw']:.3f}",
                      "≥ 0.95", _yes(stats["mean"] >= 0.95), _total(ecg["seconds"])])  # fmt: skip
    lm = results.get("char_lm")
    if lm:
        stats = lm["lstm_bits_over_seeds"]
        bits = lm["test_bits_per_character"]
        table.append(["char-LM", f"LSTM {lm['config']['hidden_size']}",
                      f"bits/char {_runs.show(stats)}",
                      f"bigram {bits['bigram']:.3f}, unigram {bits['unigram']:.3f}",
                      "≤ 2.3", _yes(stats["mean"] <= 2.3), _total(lm["seconds"])])  # fmt: skip
    dates = results.get("dates_seq2seq")
    if dates:
        for kind, stats in dates["exact_match"].items():
            attention = kind != "none"
            table.append(["dates", f"GRU, {kind} attention" if attention else "GRU, no attention",
                          f"exact match {_runs.show(stats)}",
                          "most common output "
                          f"{dates['baseline_most_common_output']['exact_match']:.3f}",
                          "1.0" if attention else "(the foil)",
                          _yes(stats["mean"] >= 1.0) if attention else "",
                          _total(dates["seconds"][kind])])  # fmt: skip
    for name, data in results.items():
        if data is None:
            table.append([name, "", "no default-size run committed", "", "", "**no**", ""])
    return table


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def stamps(results: dict[str, dict | None]) -> list[str]:
    """One line per results file: its command, commit, machine and time."""
    lines = []
    for name, data in results.items():
        if data:
            stamp = data["stamp"]
            machine = stamp.get("processor") or stamp["machine"]
            lines.append(f"- `{name}`: `{stamp['command']}`, commit {stamp.get('git_commit')}, "
                         f"{machine} with {stamp['cpu_count']} CPUs, jax {stamp['jax']}, "
                         f"{stamp['utc']}")  # fmt: skip
    return lines


def _figures(name: str, links: dict[str, list[str]]) -> str:
    if name not in links:
        return "_No default-size run committed._"
    return "\n\n".join(f"![{name}]({path})" for path in links[name])


def main(argv=None):
    _common.parse_args("applications.report", __doc__, argv)
    results = {name: load(name) for name in FIGURE_FILES}
    links = figures()
    header = ["application", "model", "result (mean ± std (min-max) over seeds)", "baselines",
              "target", "met", "time"]  # fmt: skip
    template = (Path(__file__).parent / "report_page.md").read_text()
    page = template.format(
        table=_common.markdown_table(header, rows(results)),
        stamps="\n".join(stamps(results)),
        **{f"figure_{name}": _figures(name, links) for name in FIGURE_FILES},
    )
    PAGE.write_text(page)
    _common.logger.info("wrote %s", PAGE)


if __name__ == "__main__":
    main()
