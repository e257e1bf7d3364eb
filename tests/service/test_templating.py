"""service.templating: every environment of the service comes from the one factory, every HTML
template escapes, plain text does not, and only escaped renderings become markup."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment
from markupsafe import Markup

from service import templating
from service.app import create_app
from service.digest import render as digest_render
from service.settings import Settings
from service.web.documents import embed

SERVICE = Path(__file__).resolve().parents[2] / "service"
TEMPLATES = sorted(SERVICE.rglob("*.j2"))
HOSTILE = '<script>alert(1)</script>"\'&'


def test_every_environment_of_the_service_is_the_factorys(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/t.db", migrate_on_start=False))
    environments = {"console": app.state.console_templates.env, "letters": app.state.letters.renderer._html.environment,
                    "digest": digest_render._ENV}
    for name, env in environments.items():
        assert env.autoescape is templating.autoescape, name
    renderer = app.state.letters.renderer  # the letter and notices as text: not HTML, not escaped
    assert not templating.autoescape(renderer._text.name) and not templating.autoescape(renderer._notice.name)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(SERVICE)))
def test_every_template_escapes_unless_it_is_plain_text(path):
    assert path.name.endswith((".html.j2", ".txt.j2")), "a template says by its name whether it is HTML or text"
    assert templating.autoescape(path.name) is path.name.endswith(".html.j2")


def test_plain_text_is_not_escaped_and_html_is():
    env = templating.environment(DictLoader({"a.txt.j2": "{{ v }}", "a.html.j2": "{{ v }}", "a.j2": "{{ v }}"}))
    assert env.get_template("a.txt.j2").render(v=HOSTILE) == HOSTILE
    assert "<script>" not in env.get_template("a.html.j2").render(v=HOSTILE)
    assert "<script>" not in env.get_template("a.j2").render(v=HOSTILE)  # unknown kinds escape
    assert env.from_string("{{ v }}").render(v=HOSTILE) == "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;"


def test_only_escaping_renderings_become_markup():
    env = templating.environment(DictLoader({"a.txt.j2": "<b>{{ v }}</b>", "a.html.j2": "<b>{{ v }}</b>"}))
    html = templating.render_html(env.get_template("a.html.j2"), v=HOSTILE)
    assert isinstance(html, Markup) and html.startswith("<b>&lt;script&gt;")
    with pytest.raises(ValueError):
        templating.render_html(env.get_template("a.txt.j2"), v=HOSTILE)
    other = Environment(loader=DictLoader({"a.html.j2": "<b>{{ v }}</b>"}), autoescape=False)
    with pytest.raises(ValueError):
        templating.render_html(other.get_template("a.html.j2"), v=HOSTILE)
    with pytest.raises(TypeError):
        embed(f"<html><body>{HOSTILE}</body></html>")  # a string of unknown origin is not markup


@pytest.mark.parametrize("p, shown", [(0.99996, "99%"), (1.0, "99%"), (0.5, "50%"), (0.0, "1%"), (None, "—")])
def test_a_models_probability_never_prints_as_certain(p, shown):
    env = templating.environment(DictLoader({"t.html.j2": "{{ p | probability }}"}))
    assert env.get_template("t.html.j2").render(p=p) == shown
    assert templating.probability(0.9996, 1) == "99.0%"
