"""Small, dependency-free SVG figures for evidence (deterministic bytes for the same input)."""

from collections.abc import Sequence
from xml.sax.saxutils import escape

ROW_HEIGHT = 22
FONT = "font-family='DejaVu Sans, Arial, sans-serif' font-size='12'"
STATUS_COLOURS = {
    "match": "#1a7f37",
    "ok": "#1a7f37",
    "changed": "#cf222e",
    "missing": "#cf222e",
    "unexpected": "#9a6700",
}


def table_svg(
    title: str, header: tuple[str, ...], rows: list[tuple[str, ...]], widths: tuple[int, ...]
) -> bytes:
    """A titled table; a cell whose text is a known status word is coloured by it."""
    width = sum(widths) + 20
    height = ROW_HEIGHT * (len(rows) + 2) + 20
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'>",
        f"<rect width='{width}' height='{height}' fill='white'/>",
        f"<text x='10' y='20' {FONT} font-weight='bold'>{escape(title)}</text>",
    ]
    for index, row in enumerate([header, *rows]):
        y = 20 + ROW_HEIGHT * (index + 1)
        weight = " font-weight='bold'" if index == 0 else ""
        x = 10
        for cell, cell_width in zip(row, widths, strict=True):
            colour = STATUS_COLOURS.get(cell, "#1f2328") if index else "#1f2328"
            parts.append(
                f"<text x='{x}' y='{y}' {FONT}{weight} fill='{colour}'>"
                f"{escape(_clip(cell, cell_width))}</text>"
            )
            x += cell_width
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8")


def _clip(text: str, width: int) -> str:
    limit = max(width // 7, 4)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- layered graphs (circuit_trace) ---------------------------------------------------------

GRAPH_ROW_HEIGHT = 90
GRAPH_LEFT = 230
SIGN_COLOURS = {1: "#2166ac", -1: "#b2182b", 0: "#8c959f"}  # positive blue, negative red


def layered_graph_svg(
    title: str,
    row_labels: list[str],
    column_labels: list[str],
    nodes: list[dict],
    edges: list[tuple[str, str, float]],
    caption: list[str],
) -> bytes:
    """A layered graph: x = column (token position), y = row (0 at the bottom).

    ``nodes``: dicts with id, row, column, value (signed: sets size and colour; boxes are sized
    by their label), shape ('circle', 'square' or 'box'), label (text in a box) and tip (hover
    text). ``edges``: (source id, target id, signed weight); opacity follows |weight| relative
    to the largest. ``caption``: lines printed under the graph.
    """
    widths = _column_widths(nodes, len(column_labels))
    lefts = [GRAPH_LEFT + sum(widths[:i]) for i in range(len(widths))]
    text_width = 7 * max((len(line) for line in [title, *caption]), default=0) + 20
    width = max(GRAPH_LEFT + sum(widths) + 20, text_width)
    height = 70 + GRAPH_ROW_HEIGHT * len(row_labels) + 16 * len(caption) + 34
    places = _place_nodes(nodes, widths, lefts, len(row_labels))
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'>",
        f"<rect width='{width}' height='{height}' fill='white'/>",
        f"<text x='10' y='20' {FONT} font-weight='bold'>{escape(title)}</text>",
    ]
    for row, label in enumerate(row_labels):
        y = _row_y(row, len(row_labels))
        parts.append(f"<text x='10' y='{y + 4:.1f}' {FONT}>{escape(_clip(label, 220))}</text>")
    labels_y = 40 + GRAPH_ROW_HEIGHT * len(row_labels) + 14
    for column, label in enumerate(column_labels):
        x = lefts[column] + widths[column] / 2
        parts.append(
            f"<text x='{x:.1f}' y='{labels_y}' {FONT} text-anchor='middle' "
            f"fill='#57606a'>{escape(_clip(label, widths[column]))}</text>"
        )
    parts += _edge_lines(edges, places)
    sized = [abs(n["value"]) for n in nodes if n["shape"] != "box"]
    vmax = max(sized, default=0.0) or 1.0
    parts += [_node_shape(node, places[node["id"]], vmax) for node in nodes]
    for index, line in enumerate(caption):
        parts.append(
            f"<text x='10' y='{labels_y + 26 + 16 * index}' {FONT} "
            f"fill='#57606a'>{escape(line)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8")


def _column_widths(nodes: list[dict], n_columns: int) -> list[int]:
    counts: dict[tuple[int, int], int] = {}
    for node in nodes:
        key = (node["row"], node["column"])
        counts[key] = counts.get(key, 0) + 1
    widest = [0] * n_columns
    for (_, column), count in counts.items():
        widest[column] = max(widest[column], count)
    return [max(70, 18 * count + 10) for count in widest]


def _row_y(row: int, n_rows: int) -> float:
    return 40 + GRAPH_ROW_HEIGHT * (n_rows - 1 - row) + GRAPH_ROW_HEIGHT / 2


def _place_nodes(nodes, widths, lefts, n_rows) -> dict[str, tuple[float, float]]:
    """Nodes sharing a cell are spread side by side in the order given."""
    cells: dict[tuple[int, int], list[str]] = {}
    for node in nodes:
        cells.setdefault((node["row"], node["column"]), []).append(node["id"])
    places = {}
    for (row, column), ids in cells.items():
        centre = lefts[column] + widths[column] / 2
        for i, node_id in enumerate(ids):
            places[node_id] = (centre + (i - (len(ids) - 1) / 2) * 18, _row_y(row, n_rows))
    return places


def _edge_lines(edges, places) -> list[str]:
    wmax = max((abs(w) for _, _, w in edges), default=0.0) or 1.0
    lines = []
    for source, target, weight in edges:
        if source not in places or target not in places:
            continue
        (x1, y1), (x2, y2) = places[source], places[target]
        colour = SIGN_COLOURS[(weight > 0) - (weight < 0)]
        opacity = 0.05 + 0.85 * abs(weight) / wmax
        lines.append(
            f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
            f"stroke='{colour}' stroke-width='1.5' stroke-opacity='{opacity:.3f}'/>"
        )
    return lines


def _node_shape(node: dict, place: tuple[float, float], vmax: float) -> str:
    x, y = place
    value = node["value"]
    colour = SIGN_COLOURS[(value > 0) - (value < 0)]
    tip = f"<title>{escape(node.get('tip', node['id']))}</title>"
    if node["shape"] == "box":
        label = escape(_clip(node.get("label", ""), 64))
        return (
            f"<g><rect x='{x - 32:.1f}' y='{y - 11:.1f}' width='64' height='22' rx='4' "
            f"fill='white' stroke='{colour}' stroke-width='2'/>{tip}"
            f"<text x='{x:.1f}' y='{y + 4:.1f}' {FONT} text-anchor='middle'>{label}</text></g>"
        )
    r = 3 + 6 * (abs(value) / vmax) ** 0.5
    if node["shape"] == "square":
        return (
            f"<rect x='{x - r:.1f}' y='{y - r:.1f}' width='{2 * r:.1f}' height='{2 * r:.1f}' "
            f"fill='#d0d7de' stroke='{colour}' stroke-width='2'>{tip}</rect>"
        )
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r:.1f}' fill='{colour}'>{tip}</circle>"


# ---- before/after bars and old/new scatter (feature_intervention, version_drift) ----------------


def _chart_open(width: int, height: int, title: str) -> list[str]:
    return [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'>",
        f"<rect width='{width}' height='{height}' fill='white'/>",
        f"<text x='10' y='20' {FONT} font-weight='bold'>{escape(title)}</text>",
    ]


def _chart_notes(notes: list[str], y: int) -> list[str]:
    return [
        f"<text x='10' y='{y + 16 * i}' {FONT} fill='#57606a'>{escape(note)}</text>"
        for i, note in enumerate(notes)
    ]


def before_after_bars_svg(
    title: str,
    groups: list[tuple[str, float, float]],
    *,
    notes: Sequence[str] = (),
    maximum: float = 1.0,
) -> bytes:
    """Paired horizontal bars (grey: before, blue: after) per group, values in [0, maximum]."""
    label_w, bar_w, row_h = 120, 360, 34
    height = 50 + row_h * len(groups) + 16 * len(notes) + 30
    parts = _chart_open(label_w + bar_w + 90, height, title)
    parts.append(
        f"<text x='{label_w}' y='38' {FONT} fill='#57606a'>grey: before, blue: after</text>"
    )
    for i, (label, before, after) in enumerate(groups):
        y = 50 + row_h * i
        parts.append(f"<text x='10' y='{y + 18}' {FONT}>{escape(_clip(label, label_w))}</text>")
        for offset, value, colour in ((0, before, "#8c959f"), (14, after, "#0969da")):
            length = bar_w * min(max(value / maximum, 0.0), 1.0)
            parts.append(
                f"<rect x='{label_w}' y='{y + offset}' width='{length:.1f}' "
                f"height='12' fill='{colour}'/>"
            )
            parts.append(
                f"<text x='{label_w + length + 4:.1f}' y='{y + offset + 10}' "
                f"{FONT}>{value:.3f}</text>"
            )
    parts += _chart_notes(list(notes), 50 + row_h * len(groups) + 16)
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8")


SCATTER_COLOURS = {"kept": "#1a7f37", "lost": "#cf222e"}


def old_new_scatter_svg(
    title: str,
    points: list[tuple[float, float, str, str]],
    *,
    x_label: str,
    y_label: str,
    notes: Sequence[str] = (),
) -> bytes:
    """Points (x, y, label, status) on [0, 1] x [0, 1] with the diagonal y = x drawn."""
    left, top, size = 60, 40, 320
    height = top + size + 50 + 16 * len(notes)
    parts = _chart_open(left + size + 140, height, title)
    parts += [
        f"<rect x='{left}' y='{top}' width='{size}' height='{size}' fill='none' stroke='#8c959f'/>",
        f"<line x1='{left}' y1='{top + size}' x2='{left + size}' y2='{top}' stroke='#d0d7de' "
        "stroke-dasharray='4 3'/>",
        f"<text x='{left}' y='{top + size + 30}' {FONT}>{escape(x_label)} (0 to 1)</text>",
        f"<text x='12' y='{top + size // 2}' {FONT} transform='rotate(-90 12 "
        f"{top + size // 2})'>{escape(y_label)}</text>",
    ]
    for x, y, label, status in points:
        cx, cy = left + size * min(max(x, 0.0), 1.0), top + size * (1 - min(max(y, 0.0), 1.0))
        colour = SCATTER_COLOURS.get(status, "#1f2328")
        parts.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='4' fill='{colour}'/>")
        parts.append(f"<text x='{cx + 6:.1f}' y='{cy - 4:.1f}' {FONT}>{escape(label)}</text>")
    parts += _chart_notes(list(notes), top + size + 50)
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8")


# ---- bars with reference lines and rate heatmaps (feature_discovery, audit, behavior_probe) ----

LINE_COLOURS = ("#cf222e", "#57606a", "#9a6700", "#8250df")


def bars_with_lines_svg(
    title: str,
    bars: list[tuple[str, float]],
    *,
    lines: Sequence[tuple[str, float]] = (),
    maximum: float = 1.0,
    notes: Sequence[str] = (),
) -> bytes:
    """Horizontal bars (values in [0, maximum]) with dashed vertical reference lines, e.g. a
    threshold or the chance level; each line is named in a legend above the bars."""
    label_w, bar_w, row_h = 200, 360, 22
    top = 44 + 16 * len(lines)
    height = top + row_h * len(bars) + 16 * len(notes) + 24
    parts = _chart_open(label_w + bar_w + 80, height, title)
    for i, (label, value) in enumerate(lines):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        x = label_w + bar_w * _unit(value, maximum)
        parts.append(
            f"<text x='{label_w}' y='{40 + 16 * i}' {FONT} fill='{colour}'>"
            f"- - {escape(label)} = {value:.3g}</text>"
        )
        parts.append(
            f"<line x1='{x:.1f}' y1='{top - 4}' x2='{x:.1f}' "
            f"y2='{top + row_h * len(bars)}' stroke='{colour}' stroke-dasharray='4 3'/>"
        )
    for i, (label, value) in enumerate(bars):
        y = top + row_h * i
        length = bar_w * _unit(value, maximum)
        parts.append(f"<text x='10' y='{y + 13}' {FONT}>{escape(_clip(label, label_w))}</text>")
        parts.append(
            f"<rect x='{label_w}' y='{y + 2}' width='{length:.1f}' height='14' "
            "fill='#0969da' fill-opacity='0.75'/>"
        )
        parts.append(f"<text x='{label_w + length + 4:.1f}' y='{y + 13}' {FONT}>{value:.3f}</text>")
    parts += _chart_notes(list(notes), top + row_h * len(bars) + 16)
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8")


def _unit(value: float, maximum: float) -> float:
    if value != value:  # NaN draws nothing
        return 0.0
    return min(max(value / maximum, 0.0), 1.0)


def heatmap_svg(
    title: str,
    row_labels: list[str],
    column_labels: list[str],
    values: list[list[float | None]],
    *,
    maximum: float = 1.0,
    notes: Sequence[str] = (),
) -> bytes:
    """A rows x columns grid, each cell shaded white to blue by value / maximum and printed;
    None is a grey cell (not measured)."""
    label_w, cell_w, cell_h = 220, 84, 24
    top = 58
    width = label_w + cell_w * len(column_labels) + 20
    height = top + cell_h * len(row_labels) + 16 * len(notes) + 24
    parts = _chart_open(width, height, title)
    for j, label in enumerate(column_labels):
        parts.append(
            f"<text x='{label_w + cell_w * j + cell_w / 2:.1f}' y='{top - 8}' {FONT} "
            f"text-anchor='middle'>{escape(_clip(label, cell_w))}</text>"
        )
    for i, label in enumerate(row_labels):
        y = top + cell_h * i
        parts.append(f"<text x='10' y='{y + 16}' {FONT}>{escape(_clip(label, label_w))}</text>")
        for j, value in enumerate(values[i]):
            parts.append(_heat_cell(label_w + cell_w * j, y, cell_w, cell_h, value, maximum))
    parts += _chart_notes(list(notes), top + cell_h * len(row_labels) + 16)
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8")


def _heat_cell(x: int, y: int, w: int, h: int, value: float | None, maximum: float) -> str:
    if value is None:
        fill, text, ink = "#eaeef2", "-", "#57606a"
    else:
        level = _unit(value, maximum)
        fill = f"rgb({int(255 - 246 * level)},{int(255 - 150 * level)},{int(255 - 37 * level)})"
        text, ink = f"{value:.2f}", "white" if level > 0.6 else "#1f2328"
    return (
        f"<rect x='{x}' y='{y}' width='{w - 2}' height='{h - 2}' fill='{fill}'/>"
        f"<text x='{x + w / 2 - 1:.1f}' y='{y + h / 2 + 3:.1f}' {FONT} text-anchor='middle' "
        f"fill='{ink}'>{text}</text>"
    )


# ---- log-scale histogram (sae_fidelity) ------------------------------------------------------


def log_histogram_svg(
    title: str,
    values: list[float],
    *,
    low: float,
    high: float,
    bins: int,
    x_label: str,
    y_label: str,
    markers: Sequence[tuple[float, str]] = (),
    notes: Sequence[str] = (),
) -> bytes:
    """Counts of positive values in ``bins`` log-spaced bins from ``low`` to ``high``.

    Values below ``low`` (but above zero) count in the first bin and values above ``high`` in
    the last; zeros have no place on a log axis and are left out, so say how many in ``notes``.
    ``markers`` are dashed vertical lines (value, label), e.g. a threshold.
    """
    import math

    left, plot_w, plot_h, top = 60, 480, 200, 40
    lo, hi = math.log10(low), math.log10(high)
    counts = _log_bin_counts(values, lo, hi, bins)
    height = top + plot_h + 50 + 16 * len(notes)
    parts = _chart_open(left + plot_w + 30, height, title)
    tallest = max(counts) or 1
    bar_w = plot_w / bins
    for i, count in enumerate(counts):
        h = plot_h * count / tallest
        parts.append(
            f"<rect x='{left + i * bar_w + 1:.1f}' y='{top + plot_h - h:.1f}' "
            f"width='{bar_w - 2:.1f}' height='{h:.1f}' fill='#0969da'>"
            f"<title>{count}</title></rect>"
        )
    parts += _log_axes(left, top, plot_w, plot_h, lo, hi, tallest, x_label, y_label)
    for value, label in markers:
        x = left + plot_w * (math.log10(value) - lo) / (hi - lo)
        parts.append(
            f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + plot_h}' "
            "stroke='#cf222e' stroke-dasharray='4 3'/>"
        )
        parts.append(
            f"<text x='{x:.1f}' y='{top - 4}' {FONT} text-anchor='middle' "
            f"fill='#cf222e'>{escape(label)}</text>"
        )
    parts += _chart_notes(list(notes), top + plot_h + 50)
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8")


def _log_bin_counts(values: list[float], lo: float, hi: float, bins: int) -> list[int]:
    import math

    counts = [0] * bins
    for value in values:
        if value > 0:
            index = int((math.log10(value) - lo) / (hi - lo) * bins)
            counts[min(max(index, 0), bins - 1)] += 1
    return counts


def _log_axes(left, top, plot_w, plot_h, lo, hi, tallest, x_label, y_label) -> list[str]:
    import math

    bottom = top + plot_h
    parts = [
        f"<line x1='{left}' y1='{bottom}' x2='{left + plot_w}' y2='{bottom}' stroke='#57606a'/>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{bottom}' stroke='#57606a'/>",
        f"<text x='{left - 6}' y='{top + 4}' {FONT} text-anchor='end'>{tallest}</text>",
        f"<text x='{left - 6}' y='{bottom}' {FONT} text-anchor='end'>0</text>",
        f"<text x='{left + plot_w / 2:.1f}' y='{bottom + 36}' {FONT} "
        f"text-anchor='middle'>{escape(x_label)}</text>",
        f"<text x='14' y='{top + plot_h / 2:.1f}' {FONT} text-anchor='middle' "
        f"transform='rotate(-90 14 {top + plot_h / 2:.1f})'>{escape(y_label)}</text>",
    ]
    for decade in range(math.ceil(lo), math.floor(hi) + 1):
        x = left + plot_w * (decade - lo) / (hi - lo)
        parts.append(
            f"<text x='{x:.1f}' y='{bottom + 16}' {FONT} text-anchor='middle' "
            f"fill='#57606a'>1e{decade}</text>"
        )
    return parts
