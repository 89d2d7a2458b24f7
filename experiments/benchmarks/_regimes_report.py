"""Markdown of ``experiments.benchmarks.parallel_regimes``: its tables and who wins where."""

from experiments._common import markdown_table


def ratio(row: dict, name: str) -> str:
    """``row[name]`` as ``"0.123x [0.11-0.13]"`` (the median ratio, then its round-by-round
    quartiles when the row has them); empty when the row lacks the ratio."""
    if row.get(name) is None:
        return ""
    text = f"{row[name]:.3g}x"
    if row.get(f"{name}_q25") is not None:
        text += f" [{row[f'{name}_q25']:.3g}-{row[f'{name}_q75']:.3g}]"
    return text


def _header(results: dict) -> str:
    machine = results["machine"]
    precision = results.get("precision", {})
    sections = [results[name] for name in ("newton", "linear") if results.get(name)]
    rounds = sorted({row["rounds"] for rows in sections for row in rows})
    load = machine.get("load_average")
    flags = machine.get("cpu_flags", [])
    vector = (
        "AVX-512"
        if any(f.startswith("avx512") for f in flags)
        else ("AVX2" if "avx2" in flags else "no AVX2")
    )
    return (
        f"Device {results['device']} ({', '.join(machine['jax_devices'])}; "
        f"{machine.get('cpu_model')}, {vector}, "
        f"{machine['cores']} cores{'' if load is None else f', load average {load[0]:.1f}'} at "
        f"the start); "
        f"jax {machine['versions']['jax']}, {results.get('dtype', 'float32')}, matmul precision "
        f"{precision.get('jax_default_matmul_precision') or 'default'} (`parallel_scan` runs its "
        f"own matmuls at `highest`). Median wall ms of {'/'.join(map(str, rounds))} interleaved "
        f"rounds; ratio = the reference's median / this median (> 1: faster), in brackets the "
        f"quartiles of the same ratio taken round by round."
    )


def _system(row: dict) -> str:
    return row["cell"] if row.get("gain") is None else f"{row['cell']} g={row['gain']:g}"


def newton_markdown(rows: list[dict]) -> str:
    """Per ``T`` and system, every method's forward time, ratio to scan and iterations."""
    if not rows:
        return ""
    shape = rows[0]
    table = []
    for row in rows:
        newton = row["iterations_max"] is not None
        table.append([
            row["T"], _system(row), f"{row['lyapunov']:+.3f}", row["method"],
            f"{row['median_ms']:.3g}", ratio(row, "speedup_vs_scan"),
            f"{row['iterations_max']} ({row['iterations_mean']:.1f})" if newton else "",
            ("yes" if row["converged"] else "no") if newton else "",
            ("yes" if row["fell_back"] else "no") if newton else "",
            f"{row['max_rel_diff_vs_scan']:.1e}",
        ])  # fmt: skip
    header = [
        "T", "system", "Lyapunov", "method", "fwd ms", "vs scan", "iterations max (mean)",
        "converged", "fell back", "rel. diff vs scan",
    ]  # fmt: skip
    return (
        f"**Nonlinear cells, forward** (B={shape['B']}, D={shape['D']}, H={shape['H']}; tanh RNN "
        f"`simple_rnn` with W_h ~ N(0, g^2/H), inputs N(0, 0.1^2); Lyapunov: the largest "
        f"exponent per step on the first 1000 steps of one sequence; a method that did not "
        f"converge in `max_iter=100` iterations fell back to the sequential loop, and its time "
        f"includes both):\n\n" + markdown_table(header, table)
    )


def linear_markdown(rows: list[dict]) -> str:
    """Per ``T``, cell and method: forward and forward+backward times and ratios."""
    if not rows:
        return ""
    shape = rows[0]
    table = []
    for row in rows:
        if row["mode"] != "forward":
            continue
        backward = next(
            r for r in rows
            if r["mode"] == "forward_backward" and r["T"] == row["T"]
            and r["cell"] == row["cell"] and r["method"] == row["method"]
        )  # fmt: skip
        table.append([
            row["T"], row["cell"], row["method"],
            f"{row['median_ms']:.3g}", ratio(row, "speedup_vs_scan"),
            ratio(row, "speedup_vs_lstm"), f"{backward['median_ms']:.3g}",
            ratio(backward, "speedup_vs_scan"), ratio(backward, "speedup_vs_lstm"),
            f"{row['max_rel_diff_vs_scan']:.1e} / {backward['max_rel_diff_vs_scan']:.1e}",
        ])  # fmt: skip
    header = [
        "T", "cell", "method", "fwd ms", "fwd vs scan", "fwd vs LSTM", "fwd+bwd ms",
        "fwd+bwd vs scan", "fwd+bwd vs LSTM", "rel. diff vs scan (ys / grads)",
    ]  # fmt: skip
    return (
        f"**Linear recurrences** (B={shape['B']}, D={shape['D']}, H={shape['H']}; `lru` with "
        f"r in [0.9, 0.999], max_phase 0.314, output width D; `rg_lru` and the LSTM/GRU "
        f"references output width H; inputs N(0, 1); vs scan: the same cell's `rnnjax.scan`; "
        f"gradients of sum(ys) w.r.t. the params; `scan_precomputed`, no public API: a "
        f"`lax.scan` of h_t = a_t h_(t-1) + b_t over coefficients computed for every t first, "
        f"where `rnnjax.scan` evaluates the cell's gates inside the loop):\n\n"
        + markdown_table(header, table)
    )


def winners(results: dict) -> list[dict]:
    """The fastest contender of each (section, system, mode, T) and its margin over the next:
    ``{"section", "system", "mode", "T", "fastest", "next", "margin"}``."""
    groups: dict[tuple, list[dict]] = {}
    for section in ("newton", "linear"):
        for row in results.get(section) or []:
            system = _system(row) if section == "newton" else row["cell"]
            groups.setdefault((section, system, row["mode"], row["T"]), []).append(row)
    found = []
    for (section, system, mode, steps), rows in groups.items():
        if len(rows) < 2:
            continue
        first, second = sorted(rows, key=lambda row: row["median_ms"])[:2]
        found.append({
            "section": section, "system": system, "mode": mode, "T": steps,
            "fastest": first["method"], "next": second["method"],
            "margin": second["median_ms"] / first["median_ms"],
        })  # fmt: skip
    return found


def markdown(results: dict) -> str:
    """The summary: header, the two sections' tables and the winners' table."""
    parts = [_header(results)]
    parts += [newton_markdown(results.get("newton") or [])]
    parts += [linear_markdown(results.get("linear") or [])]
    table = [
        [w["section"], w["system"], w["mode"], w["T"], w["fastest"], w["next"],
         f"{w['margin']:.3g}x"]
        for w in winners(results)
    ]  # fmt: skip
    if table:
        header = ["section", "system", "mode", "T", "fastest", "next fastest", "margin"]
        parts.append(
            "**Fastest per system** (margin = the next fastest's median / the fastest's):\n\n"
            + markdown_table(header, table)
        )
    return "\n\n".join(part for part in parts if part)
