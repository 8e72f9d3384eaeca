"""An evaluation's report directory: ``report.json``, ``report.md``, ``report.html`` and PNG
plots (a DET curve and the genuine/impostor score distributions) drawn with matplotlib, an
optional extra: ``pip install 'facetrail[eval]'``."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facetrail.errors import MissingExtraError

REPORT_SCHEMA = "facetrail.eval/1"


def _figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "eval") from exc
    return Figure(figsize=(6, 4.2), dpi=100)


def det_plot(path: Path, points: Sequence[tuple[float, float]], x_label: str, y_label: str,
             title: str, negatives: int) -> None:
    """(false positive rate, false negative rate) points on log axes. Left of ``1 / negatives``
    nothing is measured: a dotted line marks it (observed zeros are drawn at the axis floor)."""
    fig = _figure()
    ax = fig.add_subplot()
    floor = 1e-4
    xs = [max(x, floor) for x, _ in points]
    ys = [max(y, floor) for _, y in points]
    ax.step(xs, ys, where="post")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if negatives:
        ax.axvline(1 / negatives, color="grey", linestyle=":",
                   label=f"1/{negatives}: lowest measurable rate")
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
               labels: tuple[str, str], threshold: float | None, title: str) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    finite_g = [s for s in genuine if math.isfinite(s)]
    finite_i = [s for s in impostor if math.isfinite(s)]
    bins = [x / 50 for x in range(-25, 51)]
    ax.hist(finite_i, bins=bins, alpha=0.6, density=True, label=f"{labels[1]} ({len(finite_i)})")
    ax.hist(finite_g, bins=bins, alpha=0.6, density=True, label=f"{labels[0]} ({len(finite_g)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold}")
    ax.set_xlabel("score (1 - descriptor distance)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def write(out: Path, kind: str, summary: dict[str, Any], lines: list[tuple[str, str]],
          plots: dict[str, str]) -> dict[str, Any]:
    """Write ``report.json`` (the summary), ``report.md`` and ``report.html`` (the ``lines``:
    (metric, value) rows, then the ``plots``: file name -> caption) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    document = {"schema": REPORT_SCHEMA, "kind": kind, **summary}
    (out / "report.json").write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    md = [f"# facetrail eval {kind}", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in lines]
    md += [""] + [f"![{caption}]({name})" for name, caption in plots.items()]
    (out / "report.md").write_text("\n".join(md) + "\n")
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in lines
    )
    images = "".join(
        f'<figure><img src="{html.escape(n)}" alt="{html.escape(c)}"><figcaption>'
        f"{html.escape(c)}</figcaption></figure>"
        for n, c in plots.items()
    )
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>facetrail eval {kind}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td{padding:.2em 1em;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>facetrail eval {kind}</h1><table>{rows}</table>{images}</body></html>\n"
    )
    return document


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def verify_report(outcome: Any, summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """The report of a ``runner.verify`` outcome and its ``runner.verify_metrics`` summary."""
    from facetrail.eval import metrics

    same = [p.same for p in outcome.pairs]
    genuine = [s for s, y in zip(outcome.scores, same, strict=True) if y]
    impostor = [s for s, y in zip(outcome.scores, same, strict=True) if not y]
    out.mkdir(parents=True, exist_ok=True)
    points = metrics.verification_points(genuine, impostor)
    det_plot(out / "det.png", [(fmr, fnmr) for _, fmr, fnmr in points],
             "false match rate (FMR)", "false non-match rate (FNMR)", "DET, verification",
             len(impostor))
    score_plot(out / "scores.png", genuine, impostor, ("genuine pairs", "impostor pairs"),
               outcome.threshold, "Pair scores")
    acc = summary["accuracy"]
    lines = [
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
    lines.append((f"at threshold {d['threshold']}", f"TAR {d['tar']:.4f}, FAR {d['far']:.4f}"))
    return write(out, "verify", summary, lines,
                 {"det.png": "DET curve", "scores.png": "Genuine and impostor pair scores"})


def identify_report(outcome: Any, summary: dict[str, Any], out: Path) -> dict[str, Any]:
    from facetrail.eval import metrics

    out.mkdir(parents=True, exist_ok=True)
    points = metrics.det_points(outcome.mated, outcome.nonmated, outcome.top)
    det_plot(out / "det.png", [(fpir, fnir) for _, fpir, fnir in points],
             "false positive identification rate (FPIR)",
             "false negative identification rate (FNIR)", "DET, identification",
             len(outcome.nonmated))
    mate_scores = [m.score for m in outcome.mated if m.score is not None]
    score_plot(out / "scores.png", mate_scores, outcome.nonmated,
               ("mate score, mated searches", "top score, non-mated searches"), None,
               "Search scores")
    lines = [
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
    lines.append((f"at the default threshold {d['threshold']} ({d['rule']})",
                  f"FNIR {d['fnir']:.4f}, FPIR {d['fpir']:.4f}"))
    return write(out, "identify", summary, lines,
                 {"det.png": "DET curve", "scores.png": "Mated and non-mated search scores"})


def _rate_line(p: dict[str, Any]) -> str:
    threshold = "none" if p["threshold"] is None else f"{p['threshold']:.4f}"
    note = "" if p["resolved"] else " (target below 1/n: not resolved by this data)"
    return f"{p['value']:.4f} at threshold {threshold}, observed {p['observed']:.4f}{note}"
