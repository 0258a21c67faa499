"""Reading a written report back: its sections, tables and links, with the standard
library's HTML parser (what a browser would see, not regular expressions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


@dataclass
class Page:
    headings: dict[str, str] = field(default_factory=dict)
    """section id -> its <h2> text."""
    tables: dict[str, list[list[list[str]]]] = field(default_factory=dict)
    """section id -> its tables, each a list of rows of cell texts (header row first)."""
    text: dict[str, str] = field(default_factory=dict)
    """section id -> all its text (notes, captions, cells), space-joined."""
    charts: dict[str, int] = field(default_factory=dict)
    """section id -> number of chart divs."""
    links: list[tuple[str, str, str]] = field(default_factory=list)
    """(tag, attribute, value) of every src / href in the page."""
    scripts: int = 0


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.section: str | None = None
        self.in_h2 = False
        self.table: list[list[str]] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if name in a:
                self.page.links.append((tag, name, a[name] or ""))
        if tag == "script":
            self.page.scripts += 1
        if tag == "section":
            self.section = a.get("id")
            self.page.tables[self.section] = []
            self.page.text[self.section] = ""
            self.page.charts[self.section] = 0
        elif tag == "h2":
            self.in_h2 = True
        elif tag == "table":
            self.table = []
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "div" and (a.get("class") == "chart") and self.section:
            self.page.charts[self.section] += 1

    def handle_endtag(self, tag):
        if tag == "h2":
            self.in_h2 = False
        elif tag in ("td", "th") and self.cell is not None and self.table is not None:
            self.table[-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "table" and self.table is not None and self.section:
            self.page.tables[self.section].append(self.table)
            self.table = None
        elif tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.section is None:
            return
        if self.in_h2:
            self.page.headings[self.section] = data.strip()
        if self.cell is not None:
            self.cell.append(data)
        if self.lasttag != "script":
            self.page.text[self.section] += " " + data.strip()


def read_page(path: Path) -> Page:
    reader = _Reader()
    reader.feed(Path(path).read_text(encoding="utf-8"))
    return reader.page


def column(table: list[list[str]], name: str) -> list[str]:
    """The cells of column `name` (by header), header row excluded."""
    index = table[0].index(name)
    return [row[index] for row in table[1:]]
