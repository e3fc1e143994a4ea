"""The HTML export of an executed notebook: nbconvert's ``lab`` template (figures inline, as the image
outputs they are), opened by a table of contents and the run's provenance.

The table of contents links the headings that nbconvert itself gave an ``id`` (read back from the HTML it
wrote, so every link resolves); the provenance block reads ``RUN/provenance.json`` (git commit, package
versions, the lock) and the executed notebook's own parameters (papermill records them in its metadata).
Standard library only, beyond nbconvert.
"""

from __future__ import annotations

import json
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from amt_core.atomic import write_text

#: heading levels listed in the table of contents
TOC_LEVELS = ("h1", "h2", "h3")

_STYLE = """<style>
.amt-front {max-width: 1100px; margin: 1em auto 2em; padding: 0 1em; font-size: 14px; line-height: 1.45}
.amt-front h2 {font-size: 1.2em; margin: 0.8em 0 0.3em}
.amt-front nav ul {list-style: none; padding-left: 0; margin: 0}
.amt-front nav li.amt-h2 {padding-left: 1.2em} .amt-front nav li.amt-h3 {padding-left: 2.4em}
.amt-front table {border-collapse: collapse} .amt-front th {text-align: left; padding-right: 1.5em}
.amt-front td, .amt-front th {vertical-align: top; border-bottom: 1px solid #ddd; padding: 2px 6px}
</style>"""


def export_html(notebook: str | Path, provenance: str | Path | None = None) -> Path:
    """Write ``notebook`` (an executed ``.ipynb``) as ``.html`` beside it, opened by a table of contents
    and the provenance of ``provenance`` (a ``provenance.json``; None or a missing file: the notebook's
    parameters only). Returns the HTML path."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    record = _read_json(Path(provenance)) if provenance else None
    parameters = dict(nb.metadata.get("papermill", {}).get("parameters", {}))
    front = (
        _STYLE
        + '<div class="amt-front">'
        + toc_html(headings(body))
        + provenance_html(notebook.stem, parameters, record)
        + "</div>"
    )
    return write_text(notebook.with_suffix(".html"), insert_after_main(body, front))


def headings(html: str) -> list[tuple[str, str, str]]:
    """``(tag, id, text)`` of each heading of :data:`TOC_LEVELS` that has an ``id``, in document order
    (the text without nbconvert's ``¶`` anchor link)."""
    parser = _Headings()
    parser.feed(html)
    parser.close()
    return parser.found


def toc_html(found: list[tuple[str, str, str]]) -> str:
    items = "".join(
        f'<li class="amt-{tag}"><a href="#{escape(id_, quote=True)}">{escape(text)}</a></li>'
        for tag, id_, text in found
    )
    return f'<nav class="amt-toc" aria-label="Contents"><h2>Contents</h2><ul>{items}</ul></nav>'


def provenance_html(notebook: str, parameters: dict[str, Any], record: dict[str, Any] | None) -> str:
    """The provenance table: notebook, git commit, seed, this notebook's parameters, package versions."""
    from amt_core.pipeline.params import PARAMETERS

    record = record or {}
    run_params = record.get("config", {}).get("params", {})
    seed = parameters.get("seed", run_params.get("seed", PARAMETERS["seed"].default))
    versions = record.get("versions") or {}
    lock = record.get("environment_lock") or {}
    commit = record.get("git_commit") or "unknown (not a git checkout)"
    rows = [
        ("notebook", escape(notebook)),
        ("git commit", f"<code>{escape(str(commit))}</code>"),
        ("seed", f"<code>{escape(str(seed))}</code>"),
        ("created", escape(str(record.get("created", "")))),
        (
            "parameters",
            "<br>".join(
                f"<code>{escape(k)} = {escape(repr(v))}</code>" for k, v in sorted(parameters.items())
            )
            or "(none)",
        ),
        ("run parameters", f"<code>{escape(json.dumps(run_params, sort_keys=True))}</code>"),
        ("package versions", ", ".join(f"{escape(k)} {escape(str(v))}" for k, v in versions.items())),
        (
            "environment lock",
            escape(f"{lock['file']} (installed set matches: {lock.get('matches')})")
            if lock.get("file")
            else "",
        ),
    ]
    if not record:
        rows.append(("note", "no provenance.json was found beside this run's notebooks"))
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows if value)
    return f'<section class="amt-provenance"><h2>Provenance</h2><table>{body}</table></section>'


def insert_after_main(html: str, fragment: str) -> str:
    """``fragment`` placed at the start of the page's ``<main>`` (or of ``<body>``)."""
    for tag in ("<main>", "<body"):
        at = html.find(tag)
        if at >= 0:
            end = html.index(">", at) + 1
            return html[:end] + "\n" + fragment + "\n" + html[end:]
    raise ValueError("nbconvert's HTML has neither <main> nor <body>: cannot insert the table of contents")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _Headings(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []
        self._open: tuple[str, str] | None = None
        self._text: list[str] = []
        self._in_anchor = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        id_ = attr.get("id")
        if tag in TOC_LEVELS and id_:
            self._open, self._text = (tag, id_), []
        elif tag == "a" and self._open and "anchor-link" in (attr.get("class") or ""):
            self._in_anchor = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_anchor = False
        elif self._open and tag == self._open[0]:
            self.found.append((*self._open, " ".join("".join(self._text).split())))
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and not self._in_anchor:
            self._text.append(data)
