"""The consumer-protection console: server-rendered pages (Jinja2) for people, on the same app
and the same service functions as the API (`service.web.routes`)."""
