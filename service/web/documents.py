"""Putting a standalone HTML document (a letter, a digest) inside a console page unchanged.

The letter and digest renderers produce whole documents with their own page-wide styles
(`html`, `body`, `h1`, `table`…). The console shows that exact body inside a shadow root
(`<template shadowrootmode="open">`), so the document's styles apply to it alone and the
console's styles do not reach in; unlike an iframe, the page then prints across pages as one
document. Only the `html`/`body` selectors are rewritten to `:host`, the shadow root's element.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import Markup

_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.S | re.I)
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)
# `html {`, `body {`, `html, body {` as selectors (followed by `{` or `,`), not inside words.
_ROOT_SELECTOR = re.compile(r"(?<![\w.#:-])(html|body)(?=\s*[{,])")


@dataclass(frozen=True)
class Embedded:
    style: Markup
    body: Markup


def embed(document: Markup) -> Embedded:
    """The document's styles (root selectors mapped to :host) and its body, as markup to place in a
    shadow root. Only markup is taken: what `service.templating.render_html` made of an escaping
    template, so every value in it was escaped; a plain string (anything else) is refused."""
    if not isinstance(document, Markup):
        raise TypeError("embed takes the Markup of service.templating.render_html, not a plain string")
    styles = "\n".join(_ROOT_SELECTOR.sub(":host", s) for s in _STYLE.findall(document))
    body = _BODY.search(document)
    if body is None:
        raise ValueError("not an HTML document with a <body>")
    # "</" cannot end the console's <style> element early: the styles are the document's own.
    return Embedded(Markup(styles.replace("</", "<\\/")), Markup(body.group(1)))
