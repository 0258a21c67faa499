"""The HTML page: one Jinja2 template (autoescaped), the Plotly bundle inlined once.

The file opens with no network: plotly.js is written into the page's <head> (Plotly's
own `get_plotlyjs()`, the bundle the `plotly` package ships), every chart is a <div> and
a <script> calling `Plotly.newPlot`, the styles are inline and the fonts are the
system's. Every value from the model, the data or the config is escaped by Jinja2;
only the chart markup Plotly produces (its JSON is escaped for a <script> by Plotly) is
inserted as is.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from foundry.report.sections import Chart, Omitted, Section

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>foundry report: {{ header.ref }}</title>
<style>
  :root { --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --accent: #2f6fed; }
  * { box-sizing: border-box; }
  body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica,
         Arial, sans-serif; color: var(--ink); background: #f7f9fb; line-height: 1.45; }
  header { background: #102a43; color: #fff; padding: 1.2rem 2rem; }
  header h1 { margin: 0 0 .6rem; font-size: 1.5rem; }
  header dl { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr));
              gap: .2rem 1.5rem; margin: 0; font-size: .9rem; }
  header dt { color: #9fb3c8; font-size: .75rem; text-transform: uppercase; }
  header dd { margin: 0 0 .4rem; word-break: break-all; }
  .layout { display: flex; align-items: flex-start; }
  nav { position: sticky; top: 0; width: 14rem; flex: none; padding: 1rem; font-size: .9rem;
        max-height: 100vh; overflow-y: auto; }
  nav a { display: block; padding: .2rem .4rem; color: var(--accent); text-decoration: none;
          border-radius: 4px; }
  nav a:hover { background: #e8eefc; }
  nav .omitted { color: var(--muted); padding: .2rem .4rem; }
  main { flex: 1; min-width: 0; padding: 1rem 2rem 3rem 0; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
            padding: 1rem 1.4rem; margin-bottom: 1.2rem; }
  section h2 { margin: 0 0 .6rem; font-size: 1.2rem; }
  p.note { color: var(--muted); margin: .3rem 0 .8rem; }
  table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .88rem; }
  caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: .8rem;
            padding-top: .3rem; }
  th, td { border-bottom: 1px solid var(--line); padding: .3rem .7rem; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
  th { background: #f0f4f8; font-weight: 600; }
  .chart { margin: .4rem 0; }
  ul.omitted li { margin-bottom: .3rem; }
  footer { color: var(--muted); font-size: .8rem; padding: 0 2rem 2rem; }
</style>
{% if plotlyjs %}
<script type="text/javascript" id="plotly-bundle">{{ plotlyjs }}</script>
{% endif %}
</head>
<body>
<header>
  <h1>{{ header.ref }}</h1>
  <dl>
  {% for key, value in header.fields %}<div><dt>{{ key }}</dt><dd>{{ value }}</dd></div>
  {% endfor %}
  </dl>
</header>
<div class="layout">
<nav>
  {% for s in shown %}<a href="#{{ s.id }}">{{ s.title }}</a>
  {% endfor %}
  {% if omitted %}<a href="#not-in-report">Not in this report</a>{% endif %}
</nav>
<main>
{% for s in shown %}
<section id="{{ s.id }}">
  <h2>{{ s.title }}</h2>
  {% for block in s.blocks %}
    {% if block.kind == "note" %}<p class="note">{{ block.text }}</p>
    {% elif block.kind == "chart" %}<div class="chart">{{ block.html }}</div>
    {% elif block.kind == "table" %}
    <table>
      {% if block.caption %}<caption>{{ block.caption }}</caption>{% endif %}
      <thead><tr>{% for c in block.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
      <tbody>
      {% for row in block.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
      {% endfor %}
      </tbody>
    </table>
    {% endif %}
  {% endfor %}
</section>
{% endfor %}
{% if omitted %}
<section id="not-in-report">
  <h2>Not in this report</h2>
  <ul class="omitted">
  {% for s in omitted %}
  <li id="omitted-{{ s.id }}"><strong>{{ s.title }}</strong>: {{ s.reason }}</li>
  {% endfor %}
  </ul>
</section>
{% endif %}
</main>
</div>
<footer>Written by foundry {{ version }} at <span id="generated">{{ generated }}</span>.
Charts: Plotly {{ plotly_version }}, inlined; this file needs no network.</footer>
</body>
</html>
"""

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def render(
    header: dict[str, Any], sections: list[Section | Omitted], *, generated: str
) -> str:
    """The whole page. header: {"ref", "fields": [(name, value)]}."""
    import plotly
    from plotly.offline import get_plotlyjs

    from foundry.version import __version__

    shown, omitted = [], []
    for s in sections:
        if isinstance(s, Omitted):
            omitted.append(s)
            continue
        blocks = []
        for i, block in enumerate(s.blocks):
            if isinstance(block, Chart):
                # a fixed id: the same model gives the same page
                html = block.figure.to_html(
                    full_html=False, include_plotlyjs=False, div_id=f"chart-{s.id}-{i}",
                    config=PLOTLY_CONFIG,
                )
                blocks.append({"kind": "chart", "html": Markup(html)})
            else:
                blocks.append(block)
        shown.append({"id": s.id, "title": s.title, "blocks": blocks})
    charts = any(b["kind"] == "chart" for s in shown for b in s["blocks"] if isinstance(b, dict))
    # the bundle holds no "</script", but the page must survive one that does
    bundle = Markup(get_plotlyjs().replace("</script", "<\\/script")) if charts else ""
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(TEMPLATE).render(
        header=header,
        shown=shown,
        omitted=omitted,
        plotlyjs=bundle,
        generated=generated,
        version=__version__,
        plotly_version=plotly.__version__,
    )
