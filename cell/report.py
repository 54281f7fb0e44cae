"""HTML reports (self-contained pages beside their PNGs; no external assets)."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;width:320px}
.grid img{width:320px;border:1px solid #999}.nok{color:#b00;font-weight:bold}.ok{color:#070}
figcaption{font-size:12px;word-break:break-all}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def _metric_rows(metrics: dict[str, Any]) -> str:
    keys = ["n_images", "n_good", "n_defective", "image_auroc", "pixel_auroc", "aupro", "f1_max", "f1_threshold",
            "pg0", "pg0_threshold"]
    nan = float("nan")
    rows = ["<tr><td>all</td>" + "".join(f"<td>{_fmt(metrics.get(k, nan))}</td>" for k in keys) + "</tr>"]
    for name, sub in sorted(metrics.get("per_defect_type", {}).items()):
        cells = "".join(f"<td>{_fmt(sub.get(k, nan))}</td>" for k in keys)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    header = "".join(f"<th>{k}</th>" for k in ["subset"] + keys)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _figures(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "<p>none</p>"
    figures = []
    for e in entries:
        verdict_class = "nok" if e["verdict"] == "NOK" else "ok"
        figures.append(
            f"<figure><img src='{html.escape(e['file'])}' alt='heatmap'><figcaption>"
            f"{html.escape(e['source'])} ({html.escape(e['defect_type'])})<br>score {e['score']:.4g} "
            f"<span class='{verdict_class}'>{e['verdict']}</span></figcaption></figure>"
        )
    return f"<div class='grid'>{''.join(figures)}</div>"


def _fmt_value(value: Any) -> str:
    return _fmt(value)


def _part_level(section: Any) -> str:
    """The part-level section: both rules side by side, localisation, and the worst parts' maps."""
    if not section or not section.get("rules"):
        return ""

    def _fmt(value: Any) -> str:  # noqa: F811 - None (not measurable here) reads n/a
        return "n/a" if value is None else _fmt_value(value)

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(r['auroc'])}</td>"
        f"<td>{_fmt(r['at_zero_miss'].get('false_reject_rate'))}</td></tr>" for name, r in section["rules"].items())
    loc = section.get("localisation") or {}
    err = (loc.get("centroid_error_mm") or {}).get("median")
    figures = "".join(
        f"<figure><img src='{html.escape(f['file'])}' alt='part map'><figcaption>{html.escape(f['part_id'])} "
        f"({html.escape(f['label'])}) part score {f['score']:.4g}<br>{html.escape(f['group'])}</figcaption></figure>"
        for f in section.get("figures", []))
    return f"""<h2>Part level (fusion {html.escape(str(section.get('fusion')))})</h2>
<p>{section['n_good_parts']} good and {section['n_defective_parts']} defective parts, every view fused into one part
map as the line does; the old rule judges a part by its worst view.</p>
<table><tr><th>rule</th><th>part AUROC</th><th>false rejects at zero miss</th></tr>{rows}</table>
<p>Localisation at {html.escape(str(section.get('localisation_threshold_source')))}: {loc.get('hit', 0)} of
{loc.get('true_defects', 0)} true defects hit, {_fmt(loc.get('false_defects_per_good_part'))} false defects per good
part, median centroid error {_fmt(err)} mm.</p>
<div class='grid'>{figures}</div><p>White: reported defects; green: true defect regions; black: not seen.</p>"""


def write_eval_report(path: Path, metrics: dict[str, Any], overlays: dict[str, list[dict[str, Any]]]) -> Path:
    """Write the evaluation report page ``path`` (roc.png and overlays/ live beside it)."""
    threshold = metrics["threshold"]
    at = metrics["at_threshold"]
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>Evaluation report</title>
<style>{_STYLE}</style></head><body>
<h1>Evaluation report</h1>
<p>Model <code>{html.escape(metrics['model_dir'])}</code> on <code>{html.escape(metrics['data'])}</code>,
scored once ({metrics['seconds_per_image'] * 1000:.1f} ms per image). The threshold was chosen on training-side
data only (policy <b>{html.escape(threshold['policy'])}</b>, value {threshold['value']:.6g}).
{metrics.get('excluded_training_side_images', 0)} images of the data were left out because the model was trained
or thresholded on them.</p>
<h2>Metrics</h2>{_metric_rows(metrics)}
<h2>At the model's threshold</h2>
<table><tr><th>truth \\ verdict</th><th>NOK</th><th>OK</th></tr>
<tr><td>defective</td><td>{at['true_nok']}</td><td>{at['missed_defects']}</td></tr>
<tr><td>good</td><td>{at['false_alarms']}</td><td>{at['true_ok']}</td></tr></table>
<p>Good parts passed: {at['good_pass_rate']:.1%}; defects caught: {at['defect_catch_rate']:.1%}.
PG0 on this test data = {_fmt(metrics['pg0'])}: the share of good parts that a threshold of
{_fmt(metrics['pg0_threshold'])} (just below the lowest defective score) would pass while missing no defect.
It is reported for information; choosing the threshold from it would be test-set selection.</p>
<h2>ROC curve</h2><img src="roc.png" alt="ROC curve">
<h2>Worst misses (defective images with the lowest scores)</h2>{_figures(overlays['worst_misses'])}
<h2>False alarms (good images with the highest scores)</h2>{_figures(overlays['false_alarms'])}
<p>White outlines: ground-truth masks. Colours: anomaly map on one scale for all images.</p>
{_part_level(metrics.get("part_level"))}
</body></html>"""
    path.write_text(body, encoding="utf-8")
    return path
