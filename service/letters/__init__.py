"""投诉风险提示函: the letters the protection department sends departments about risky complaints.

`Letters` (service.letters.service) is the one entry point: alerting calls it to issue a letter or
record a repeat, the worker to flush grouping windows and send reminders, the API and the console to
read letters and to acknowledge, resolve or extend them. Its parts: numbering.py (gapless numbers per
year), grouping.py (which alerts share a letter), items.py (what a letter shows of each request),
deadlines.py (response and acknowledgement deadlines), reminders.py (overdue, reminders owed),
notify.py (outbox messages), access.py (a department sees its own), render.py (HTML, text, notices),
schemas.py (the API's bodies).
"""

from service.letters.access import Access
from service.letters.items import mask_ref, max_level, summarize
from service.letters.numbering import format_number, take_number
from service.letters.service import Letters

__all__ = ["Access", "Letters", "format_number", "mask_ref", "max_level", "summarize", "take_number"]
