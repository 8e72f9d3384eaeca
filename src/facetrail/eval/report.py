"""An evaluation's report directory: ``report.json``, ``report.md``, ``report.html`` and PNG
plots (a DET curve and the genuine/impostor score distributions) drawn with matplotlib, an
optional extra: ``pip install 'facetrail[eval]'``."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from facetrail.errors import MissingExtraError
from facetrail.eval import metrics

REPORT_SCHEMA = "facetrail.eval/1"


def _figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "eval") from exc
    return Figure(figsize=(6, 4.2), dpi=100)


def check_plots() -> None:
    """Refuse before any work when a report's plots cannot be drawn (no matplotlib)."""
    _figure()


def det_plot(path: Path, curves: Mapping[str, Sequence[tuple[float, float]]], x_label: str,
             y_label: str, title: str, negatives: int) -> None:
    """One curve per name of (false positive rate, false negative rate) points, on the same
    log axes. Left of ``1 / negatives`` nothing is measured: a dotted line marks it (observed
    zeros are drawn at the axis floor). A single curve gets no legend entry of its own."""
    fig = _figure()
    ax = fig.add_subplot()
    floor = 1e-4
    for name, points in curves.items():
        xs = [max(x, floor) for x, _ in points]
        ys = [max(y, floor) for _, y in points]
        ax.step(xs, ys, where="post", label=name if len(curves) > 1 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if negatives:
        ax.axvline(1 / negatives, color="grey", linestyle=":",
                   label=f"1/{negatives}: lowest measurable rate")
    if negatives or len(curves) > 1:
        ax.legend(loc="upper right")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def score_plot(path: Path, genuine: Sequence[float], impostor: Sequence[float],
               labels: tuple[str, str], threshold: float | None, title: str,
               x_label: str = "score") -> None:
    fig = _figure()
    ax = fig.add_subplot()
    finite_g = [s for s in genuine if math.isfinite(s)]
    finite_i = [s for s in impostor if math.isfinite(s)]
    bins = [x / 50 for x in range(-50, 51)]
    ax.hist(finite_i, bins=bins, alpha=0.6, density=True, label=f"{labels[1]} ({len(finite_i)})")
    ax.hist(finite_g, bins=bins, alpha=0.6, density=True, label=f"{labels[0]} ({len(finite_g)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold}")
    ax.set_xlabel(x_label)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


Rows = list[tuple[str, list[str]]]
"""Table rows: a metric and its value under each model, in column order."""


def document(kind: str, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON document of an evaluation: one model's summary at the top level, or several
    under ``models`` (by model name, in the order run)."""
    head = {"schema": REPORT_SCHEMA, "kind": kind}
    if len(summaries) == 1:
        return {**head, **next(iter(summaries.values()))}
    return {**head, "models": summaries}


def table(lines: dict[str, list[tuple[str, str]]]) -> Rows:
    """Join each model's (metric, value) lines into rows with one value per model ("" where a
    model lacks the metric), metrics in first-seen order."""
    order: list[str] = []
    values: dict[str, dict[str, str]] = {}
    for name, rows in lines.items():
        for metric, value in rows:
            if metric not in values:
                order.append(metric)
                values[metric] = {}
            values[metric][name] = value
    return [(m, [values[m].get(name, "") for name in lines]) for m in order]


def write(out: Path, kind: str, doc: dict[str, Any], columns: list[str], rows: Rows,
          plots: dict[str, str]) -> dict[str, Any]:
    """Write ``report.json`` (``doc``), ``report.md`` and ``report.html`` (the ``rows`` under
    a "metric" column and ``columns``, then the ``plots``: file name -> caption) into
    ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    md = [f"# facetrail eval {kind}", "", "| metric | " + " | ".join(columns) + " |",
          "|---" * (len(columns) + 1) + "|"]
    md += [f"| {k} | " + " | ".join(vs) + " |" for k, vs in rows]
    md += [""] + [f"![{caption}]({name})" for name, caption in plots.items()]
    (out / "report.md").write_text("\n".join(md) + "\n")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["metric", *columns])
    body = "".join(
        f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{html.escape(v)}</td>" for v in vs)
        + "</tr>"
        for k, vs in rows
    )
    images = "".join(
        f'<figure><img src="{html.escape(n)}" alt="{html.escape(c)}"><figcaption>'
        f"{html.escape(c)}</figcaption></figure>"
        for n, c in plots.items()
    )
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>facetrail eval {kind}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.2em 1em;border-bottom:1px solid #ddd;text-align:left}</style></head>"
        f"<body><h1>facetrail eval {kind}</h1><table><tr>{head}</tr>{body}</table>{images}"
        "</body></html>\n"
    )
    return doc


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _columns(summaries: dict[str, dict[str, Any]]) -> list[str]:
    return ["value"] if len(summaries) == 1 else list(summaries)


def _scores_file(name: str, several: bool) -> str:
    return f"scores-{name}.png" if several else "scores.png"


def verify_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The (metric, value) lines of a ``runner.verify_metrics`` summary; the metric names do
    not depend on the model, so several models' lines line up as a table."""
    acc = summary["accuracy"]
    lines = [
        ("score", summary.get("score", "")),
        ("pairs (genuine / impostor)",
         f"{summary['pairs']} ({summary['genuine']} / {summary['impostor']})"),
        ("images with no face found (their pairs count as rejected)",
         f"{summary['no_face_images']} of {summary['images']}; "
         f"{summary['pairs_with_no_face']} pairs"),
        (f"accuracy, {acc['folds']}-fold", f"{acc['mean']:.4f} ± {acc['std']:.4f}"),
        ("ROC AUC", f"{summary['roc_auc']:.4f}"),
        ("EER", f"{summary['eer']['eer']:.4f} at threshold {summary['eer']['threshold']:.4f}"),
    ]
    for p in summary["tar_at_far"]:
        lines.append((f"TAR at FAR {p['target']:g}", _rate_line(p)))
    d = summary["at_default_threshold"]
    lines.append(("at the default threshold",
                  f"{d['threshold']}: TAR {d['tar']:.4f}, FAR {d['far']:.4f}"))
    return [(k, v) for k, v in lines if v]


def verify_report(runs: dict[str, tuple[Any, dict[str, Any]]], out: Path) -> dict[str, Any]:
    """The report of ``runner.verify`` outcomes and their ``runner.verify_metrics`` summaries,
    by model name: one table column and one DET curve per model."""
    out.mkdir(parents=True, exist_ok=True)
    several = len(runs) > 1
    curves: dict[str, list[tuple[float, float]]] = {}
    plots = {"det.png": "DET curve" + (" of each model" if several else "")}
    negatives = 0
    for name, (outcome, summary) in runs.items():
        same = [p.same for p in outcome.pairs]
        genuine = [s for s, y in zip(outcome.scores, same, strict=True) if y]
        impostor = [s for s, y in zip(outcome.scores, same, strict=True) if not y]
        negatives = max(negatives, len(impostor))
        curves[name] = [(fmr, fnmr) for _, fmr, fnmr in
                        metrics.verification_points(genuine, impostor)]
        scores = _scores_file(name, several)
        score_plot(out / scores, genuine, impostor, ("genuine pairs", "impostor pairs"),
                   outcome.threshold, f"Pair scores, {name}" if several else "Pair scores",
                   _x_label(summary))
        plots[scores] = "Genuine and impostor pair scores" + (f", {name}" if several else "")
    det_plot(out / "det.png", curves, "false match rate (FMR)", "false non-match rate (FNMR)",
             "DET, verification", negatives)
    summaries = {name: summary for name, (_, summary) in runs.items()}
    rows = table({name: verify_lines(s) for name, s in summaries.items()})
    return write(out, "verify", document("verify", summaries), _columns(summaries), rows, plots)


def identify_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The (metric, value) lines of a ``runner.identify_metrics`` summary (``verify_lines``)."""
    lines = [
        ("score", summary.get("score", "")),
        ("gallery faces", str(summary["gallery_faces"])),
        ("enrolled / never-enrolled identities",
         f"{summary['enrolled_identities']} / {summary['never_enrolled_identities']}"),
        ("distractor images", str(summary["distractor_images"])),
        ("mated / non-mated searches",
         f"{summary['mated_searches']} / {summary['nonmated_searches']}"),
        ("probe photos per search (fusion)",
         f"{summary['probe_photos_per_search']} ({summary['fusion']})"),
        ("searches with a probe photo without a face", str(summary["failed_probes"])),
        ("quality floor of gallery faces", str(summary["min_quality"])),
        ("rank-1", f"{summary['rank_1']:.4f}"),
        ("rank-10", f"{summary['rank_10']:.4f}"),
    ]
    for p in summary["fnir_at_fpir"]:
        lines.append((f"FNIR at FPIR {p['target']:g} (L = {summary['candidate_list_length']})",
                      _rate_line(p)))
    d = summary["at_default_threshold"]
    lines.append(("at the default threshold",
                  f"{d['threshold']} ({d['rule']}): FNIR {d['fnir']:.4f}, FPIR {d['fpir']:.4f}"))
    return [(k, v) for k, v in lines if v]


def identify_report(runs: dict[str, tuple[Any, dict[str, Any]]], out: Path) -> dict[str, Any]:
    """The report of ``runner.identify`` outcomes and summaries, by model name."""
    out.mkdir(parents=True, exist_ok=True)
    several = len(runs) > 1
    curves: dict[str, list[tuple[float, float]]] = {}
    plots = {"det.png": "DET curve" + (" of each model" if several else "")}
    negatives = 0
    for name, (outcome, summary) in runs.items():
        negatives = max(negatives, len(outcome.nonmated))
        curves[name] = [(fpir, fnir) for _, fpir, fnir in
                        metrics.det_points(outcome.mated, outcome.nonmated, outcome.top)]
        mate_scores = [m.score for m in outcome.mated if m.score is not None]
        scores = _scores_file(name, several)
        score_plot(out / scores, mate_scores, outcome.nonmated,
                   ("mate score, mated searches", "top score, non-mated searches"), None,
                   f"Search scores, {name}" if several else "Search scores", _x_label(summary))
        plots[scores] = "Mated and non-mated search scores" + (f", {name}" if several else "")
    det_plot(out / "det.png", curves, "false positive identification rate (FPIR)",
             "false negative identification rate (FNIR)", "DET, identification", negatives)
    summaries = {name: summary for name, (_, summary) in runs.items()}
    rows = table({name: identify_lines(s) for name, s in summaries.items()})
    return write(out, "identify", document("identify", summaries), _columns(summaries), rows,
                 plots)


def _x_label(summary: dict[str, Any]) -> str:
    meaning = summary.get("score")
    return f"score ({meaning})" if meaning else "score"


def _rate_line(p: dict[str, Any]) -> str:
    threshold = "none" if p["threshold"] is None else f"{p['threshold']:.4f}"
    note = "" if p["resolved"] else " (target below 1/n: not resolved by this data)"
    return f"{p['value']:.4f} at threshold {threshold}, observed {p['observed']:.4f}{note}"


def optout_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The (metric, value) lines of an ``optout.optout_metrics`` summary (``verify_lines``)."""
    lines = [
        ("score", summary.get("score", "")),
        ("gallery faces (group photos' / bystanders')",
         f"{summary['gallery_faces']} ({summary['group_faces']} / "
         f"{summary['bystander_faces']})"),
        ("opt-outs of enrolled people (photos each)",
         f"{summary['optouts']} of {summary['identities']} identities "
         f"({summary['photos_per_optout']})"),
        ("pairs: the requester's other faces / others' faces",
         f"{summary['mated_pairs']} / {summary['other_pairs']}"),
    ]
    if summary["stranger_optouts"]:
        lines.append(("strangers' opt-outs (pairs)",
                      f"{summary['stranger_optouts']} ({summary['stranger_pairs']})"))
    for row in summary["thresholds"]:
        name = f"at {row['threshold']:.2f}" + (" (default)" if row["default"] else "")
        lines.append((name, _optout_row(row, summary["optouts"])))
    p = summary["at_false_suppression"]
    note = "" if p["resolved"] else " (target below 1/n: not resolved by this data)"
    threshold = "none" if p["threshold"] is None else f"{p['threshold']:.4f}"
    lines.append((f"false suppression <= {p['target']:g}",
                  f"threshold {threshold}: missed {fmt_rate(p['missed_suppression'])}, "
                  f"false {fmt_rate(p['observed'])}{note}"))
    differ = summary["index_disagreements"]
    lines.append(("index and scoring disagree on",
                  f"{len(differ)} faces" + (f" (scores {', '.join(map(str, differ))})"
                                            if differ else "")))
    return [(k, v) for k, v in lines if v]


def _optout_row(row: dict[str, Any], optouts: int) -> str:
    text = (f"missed {fmt_rate(row['missed_suppression'])}, "
            f"false {fmt_rate(row['false_suppression'])} "
            f"({row['optouts_hitting_others']} of {optouts} opt-outs hit somebody else); "
            f"review: {fmt_rate(row['review_mated'])} of the requester's faces, "
            f"{row['review_others_per_optout']:.2f} others per opt-out")
    if "stranger_false_suppression" in row:
        text += (f"; strangers: false {fmt_rate(row['stranger_false_suppression'])}, "
                 f"{row['strangers_hitting_someone']} hit somebody")
    return text


def optout_report(runs: dict[str, tuple[Any, dict[str, Any]]], out: Path) -> dict[str, Any]:
    """The report of ``optout.optout`` outcomes and summaries, by model name."""
    out.mkdir(parents=True, exist_ok=True)
    several = len(runs) > 1
    curves: dict[str, list[tuple[float, float]]] = {}
    plots = {"det.png": "Missed against false suppression" + (", each model" if several
                                                              else "")}
    negatives = 0
    for name, (outcome, summary) in runs.items():
        mated = [float(s) for t in outcome.trials for s in t.mated]
        others = [float(s) for t in outcome.trials for s in t.others]
        negatives = max(negatives, len(others))
        curves[name] = [(f, m) for _, f, m in metrics.verification_points(mated, others)]
        scores = _scores_file(name, several)
        score_plot(out / scores, mated, others,
                   ("the requester's other faces", "other people's faces"),
                   summary["default_threshold"],
                   f"Opt-out scores, {name}" if several else "Opt-out scores",
                   _x_label(summary))
        plots[scores] = "Best score against an opt-out" + (f", {name}" if several else "")
    det_plot(out / "det.png", curves, "false suppression (per other face)",
             "missed suppression (per requester's face)", "Opt-out by face", negatives)
    summaries = {name: summary for name, (_, summary) in runs.items()}
    rows = table({name: optout_lines(s) for name, s in summaries.items()})
    return write(out, "optout", document("optout", summaries), _columns(summaries), rows,
                 plots)
