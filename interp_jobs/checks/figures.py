"""Small, dependency-free SVG figures for evidence (deterministic bytes for the same input)."""

from xml.sax.saxutils import escape

ROW_HEIGHT = 22
FONT = "font-family='DejaVu Sans, Arial, sans-serif' font-size='12'"
STATUS_COLOURS = {"match": "#1a7f37", "ok": "#1a7f37", "changed": "#cf222e",
                  "missing": "#cf222e", "unexpected": "#9a6700"}


def table_svg(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]],
              widths: tuple[int, ...]) -> bytes:
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
            parts.append(f"<text x='{x}' y='{y}' {FONT}{weight} fill='{colour}'>"
                         f"{escape(_clip(cell, cell_width))}</text>")
            x += cell_width
    parts.append("</svg>")
    return "\n".join(parts).encode("utf-8")


def _clip(text: str, width: int) -> str:
    limit = max(width // 7, 4)
    return text if len(text) <= limit else text[: limit - 1] + "…"
