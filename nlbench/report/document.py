"""``nlbench report``: one self-contained report of a set of runs, as Markdown and as offline HTML.

The report is a list of sections (:class:`Section`), each holding paragraphs, Markdown tables
(from :func:`nlbench.report.render.render`) and figures (from :mod:`nlbench.report.figures`), rendered
twice: ``report.md`` links the PNG files under ``figures/``; ``report.html`` embeds them (base64),
so the one file opens anywhere without a server, and links the PDFs.
"""

from __future__ import annotations

import base64
import html
import io
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlbench.errors import DataError, UsageError

#: Figures a report tries, in order, with a line on what each shows.
FIGURES = {
    "curves": "Test accuracy per epoch of each method (mean over seeds, min-max band).",
    "memorisation": "Training accuracy on truly clean and truly noisy samples, against the labels trained on: "
                    "a network memorises the wrong labels when the dashed line climbs.",
    "selection": "Share of truly clean labels among the samples a selection method trains on; SCN's relabelling.",
    "confusion": "Row-normalised confusion matrices of the deployed models, summed over seeds.",
    "temperature": "CCT's student accuracy against the distillation temperature U.",
    "ranks": "Average ranks of the methods over the grid's cells, with Nemenyi's critical difference.",
    "lambda": "CCT's dynamic balancing weight for several beta (the schedule code itself).",
    "gradcam": "Grad-CAM maps of the deployed models on sample test images.",
}


@dataclass
class Section:
    """A titled part of the report: Markdown blocks and figures (PNG path, PDF path, caption)."""

    title: str
    blocks: list[str] = field(default_factory=list)
    figures: list[tuple[Path, Path | None, str]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def build(runs_dir: Path, out: Path, filters: Any, *, gradcam_runs: int = 2,
          progress: Callable[[str], None] = lambda text: None) -> list[Section]:
    """Every section of the report of the runs under ``runs_dir`` passing ``filters`` (figures written under out/figures)."""
    from nlbench.report import figures
    from nlbench.report.runs import read_runs

    found = read_runs(runs_dir, filters)
    for warning in found.warnings():
        progress(warning)
    runs = found.runs
    if not runs:
        raise UsageError(f"no finished runs in {runs_dir} match the filters; `nlbench status --runs-dir {runs_dir}` "
                         f"lists them.")
    ids = {r.run_id for r in runs}
    sections = [protocol_section(runs, runs_dir)]
    sections += table_sections(runs_dir, ids)
    sections += tuned_sections(runs_dir, getattr(filters, "methods", None) or None)
    figures.require()
    folder = out / "figures"
    shown = Section("Figures")
    for kind, caption in FIGURES.items():
        progress(f"figure {kind}")
        try:
            if kind == "ranks":
                made = figures.plot_ranks(runs_dir, folder, run_ids=ids)
            elif kind == "lambda":
                if not any(r.method == "cct" for r in runs):
                    continue
                made = figures.plot_lambda(folder)
            elif kind == "gradcam":
                chosen = _gradcam_choice(runs, gradcam_runs)
                if not chosen:
                    continue
                from nlbench.plugins import get_registry

                made = figures.plot_gradcam(chosen, folder, get_registry(), progress=progress)
            else:
                made = getattr(figures, f"plot_{kind}")(runs, folder)
        except (UsageError, DataError) as err:  # nothing of that kind in these runs, or a damaged model.pt
            shown.blocks.append(f"- {kind}: not drawn ({str(err).split(';')[0]}).")
            continue
        pngs = [p for p in made.files if p.suffix == ".png"]
        for png in pngs:
            pdf = png.with_suffix(".pdf")
            shown.figures.append((png, pdf if pdf.is_file() else None,
                                  f"**{kind}** ({png.stem}): {caption}"))
    sections.append(shown)
    return sections


def _gradcam_choice(runs: list[Any], count: int) -> list[Any]:
    """The first seed of each method at the highest noise, up to ``count`` runs (Grad-CAM rebuilds each run)."""
    from nlbench.store import MODEL

    with_model = [r for r in runs if (r.path / MODEL).is_file()]
    if not with_model or count <= 0:
        return []
    top = max(float(r.result["noise"].get("rate") or 0) for r in with_model)
    chosen, seen = [], set()
    for run in with_model:
        if float(run.result["noise"].get("rate") or 0) == top and run.method not in seen:
            seen.add(run.method)
            chosen.append(run)
    return chosen[:count]


def protocol_section(runs: list[Any], runs_dir: Path) -> Section:
    """What was run: data, noise, initialisation, training, selection, seeds, versions, machines."""
    import nlbench

    def values(get: Callable[[Any], Any]) -> str:
        counted = Counter(str(get(r)) for r in runs)
        return ", ".join(f"{k} ({n} run{'s' * (n > 1)})" if len(counted) > 1 else k for k, n in counted.most_common())

    train = lambda key: (lambda r: r.result.get("train", {}).get(key))  # noqa: E731
    env = lambda key: (lambda r: (r.result.get("environment") or {}).get(key))  # noqa: E731
    rows = [
        ("runs", f"{len(runs)} finished runs in {runs_dir}"),
        ("methods", values(lambda r: r.method)),
        ("datasets (test images)", values(lambda r: f"{r.dataset} ({r.result.get('test_size')})")),
        ("noise", values(lambda r: r.noise + ("" if r.result["noise"].get("source") == "injected"
                                               else f" [{r.result['noise'].get('source')}]"))),
        ("seeds", ", ".join(map(str, sorted({r.seed for r in runs})))),
        ("initialisation", values(lambda r: r.result.get("initialisation", "random"))),
        ("epochs", values(train("epochs"))),
        ("image size (px)", values(train("image_size"))),
        ("batch size", values(train("batch_size"))),
        ("learning rates (backbone / classifier)",
         values(lambda r: f"{r.result['train'].get('backbone_lr')} / {r.result['train'].get('classifier_lr')}")),
        ("augmentation", values(lambda r: r.result["train"].get("augmentation") or "the dataset's")),
        ("validation split", values(lambda r: f"{100 * (r.result.get('validation') or {}).get('fraction', 0):g}% "
                                             f"of the training set, noisy labels")),
        ("selection rule of the tables", "the last epoch (`nlbench table --metric` offers lastk, val, best)"),
        ("nlbench", values(lambda r: (r.result.get("environment") or {}).get("nlbench", "?"))),
        ("torch", values(env("torch"))),
        ("device", values(lambda r: f"{env('device')(r)} ({env('device_name')(r) or 'CPU'})")),
    ]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in rows)
    generated = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return Section("Protocol", [f"Generated {generated} by nlbench {nlbench.__version__}.", table,
                                "Selection rules: " + (runs[0].result.get("selection_rule") or "last epoch")])


def table_sections(runs_dir: Path, ids: set[str]) -> list[Section]:
    """One section per table layout that has runs, in Markdown, with --compare standard where it ran."""
    from nlbench.report.render import render
    from nlbench.report.tables import LAYOUT_SPECS, TITLES, build_table, compare, ranks

    sections = []
    for layout in ("table1", "table2", "table3", "table8"):
        table = build_table(runs_dir, "last", "model", run_ids=ids, layout=layout)
        if not table.rows:
            continue
        if layout == "table1" and "source" in table.frame and (table.frame["source"] == "dataset").all():
            continue  # only real noise: the Table 2 layout shows it
        text = io.StringIO()
        # The Standard row is the baseline where there is one (labelled or not); several: none.
        standards = {row[-1] for row in table.rows if row[-1].split(" [", 1)[0] == "standard" and ":" not in row[-1]}
        baseline = standards.pop() if len(standards) == 1 else None
        can_compare = baseline is not None and LAYOUT_SPECS[layout].method_rows
        render(table, "markdown", out=text, comparison=compare(table, baseline) if can_compare else None,
               rank_result=ranks(table) if can_compare else None)
        notes = [f"- {note.removeprefix('note: ').removeprefix('warning: ')}" for note in table.notes]
        sections.append(Section(TITLES[layout], [text.getvalue().strip()] + (["\n".join(notes)] if notes else [])))
    return sections


def tuned_sections(runs_dir: Path, methods: list[str] | None = None) -> list[Section]:
    """The tuned-vs-default tables of the store's ``nlbench tune`` outcomes (none: no section)."""
    from nlbench.report.tuned import markdown, tuned_table
    from nlbench.tuned import load_outcomes

    groups = load_outcomes(runs_dir, methods)
    if not groups:
        return []
    intro = ("Each method tuned with the same budget by `nlbench tune`, chosen on the noisy validation split, then "
             "trained at its chosen and at its default configuration on the evaluation seeds.")
    return [Section("Tuned vs default", [intro] + [markdown(tuned_table(outcomes, context))
                                                   for context, outcomes in groups])]


def write(sections: list[Section], out: Path, title: str) -> tuple[Path, Path]:
    """Write report.md and report.html under ``out``; returns their paths."""
    from nlbench.fileio import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", "Contents:", ""]
    md += [f"{i}. [{s.title}](#{s.anchor})" for i, s in enumerate(sections, start=1)] + [""]
    for section in sections:
        md += [f"## {section.title}", ""]
        for block in section.blocks:
            md += [block, ""]
        for png, pdf, caption in section.figures:
            rel = png.relative_to(out).as_posix()
            md += [f"![{png.stem}]({rel})", "", caption + (f" [PDF]({pdf.relative_to(out).as_posix()})" if pdf else ""),
                   ""]
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_bytes(md_path, "\n".join(md).encode("utf-8"))
    atomic_write_bytes(html_path, to_html(sections, out, title).encode("utf-8"))
    return md_path, html_path


STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#111}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#333}
nav ol{columns:2}code{background:#f4f4f4;padding:0 3px}"""


def to_html(sections: list[Section], out: Path, title: str) -> str:
    """The report as one HTML file: tables as tables, figures embedded, no external resource."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<nav><h2>Contents</h2><ol>" + "".join(f"<li><a href='#{s.anchor}'>{html.escape(s.title)}</a></li>"
                                                     for s in sections) + "</ol></nav>"]
    for section in sections:
        parts.append(f"<section id='{section.anchor}'><h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            parts.append(_block_html(block))
        for png, pdf, caption in section.figures:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            link = f" <a href='{html.escape(pdf.relative_to(out).as_posix())}'>PDF</a>" if pdf else ""
            parts.append(f"<figure><img alt='{html.escape(png.stem)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{_inline(caption)}{link}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


#: A table cell that is a number (right-aligned): 12.3, +1.0, 20.83 ± 1.2 (3), +1.04 [..] ..., –.
NUMBER = re.compile(r"[+\-]?\d+(\.\d+)?( ± \d+(\.\d+)?)?( \(\d+\))?( \[.*| \(n=.*)?|–")


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` inside escaped text."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _block_html(block: str) -> str:
    """Markdown blocks of pipe tables, bullet lines and paragraphs as HTML."""
    out, table, bullets = [], [], []

    def flush() -> None:
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*", r)]
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            head, body = cells[0], cells[1:]
            html_rows = ["<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
            for row in body:
                html_rows.append("<tr>" + "".join(
                    f"<td class='num'>{_inline(c)}</td>" if NUMBER.fullmatch(c.replace("**", "")) else
                    f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
            out.append("<table>" + "".join(html_rows) + "</table>")
            table.clear()
        if bullets:
            out.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in block.splitlines():
        if line.startswith("|"):
            if bullets:
                flush()
            table.append(line)
        elif line.startswith("- "):
            if table:
                flush()
            bullets.append(line[2:])
        else:
            flush()
            if line.strip():
                out.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(out)
