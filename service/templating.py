"""The one Jinja2 environment factory: the console pages, the letters and notices, the digest and
the e-mails built from them are all rendered by environments made here, so that every value a
template prints is HTML-escaped unless the template is plain text.

Escaping is chosen by the template's name, not left to each caller: the console's templates end
in `.html.j2`, which `select_autoescape()` (looking for `.html`) did not escape at all.

Plain-text templates (`.txt.j2`: the letter as text, the digest as text, the reminder, repeat and
resolved notices that go out as the text/plain part of an e-mail) are deliberately not escaped: they
are not HTML, and escaping would show a reader "&lt;" for "<". They only ever leave the service as
text/plain, with `X-Content-Type-Options: nosniff` on the API (`service.api.deps.DOCUMENT_HEADERS`), so
no browser reads them as markup.
Every other template, whatever its name (a template from a string included), is escaped.
"""

from __future__ import annotations

from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, Template, Undefined
from markupsafe import Markup

from service.vocab import label

PLAIN_TEXT = ".txt.j2"


def autoescape(name: str | None) -> bool:
    """Escape everything but plain-text templates."""
    return not (name or "").endswith(PLAIN_TEXT)


def environment(loader: BaseLoader, *, undefined: type[Undefined] = StrictUndefined, **options: Any) -> Environment:
    """An environment whose templates escape what they print (see the module doc); `options` are
    further Environment options (e.g. keep_trailing_newline)."""
    env = Environment(loader=loader, autoescape=autoescape, undefined=undefined, trim_blocks=True,
                      lstrip_blocks=True, **options)
    env.filters["probability"] = probability
    env.filters["label"] = label  # {{ letter.status | label("letter") }}: service.vocab's one label table
    return env


def render_html(template: Template, *args: Any, **context: Any) -> Markup:
    """An escaping template's output, marked as markup: the only way service code makes markup out
    of a rendering (the console embeds letters and digests only in this form)."""
    if template.environment.autoescape is not autoescape or not autoescape(template.name):
        raise ValueError(f"{template.name} is not an escaping HTML template of service.templating")
    return Markup(template.render(*args, **context))


PROBABILITY_FLOOR, PROBABILITY_CAP = 0.01, 0.99


def probability(p: float | None, digits: int = 0) -> str:
    """A model's probability for a reader: between 1% and 99%, since a model is never certain (a
    probability of 0.9996 printed as 100% reads as a fact)."""
    if p is None:
        return "—"
    return f"{min(max(float(p), PROBABILITY_FLOOR), PROBABILITY_CAP) * 100:.{digits}f}%"
