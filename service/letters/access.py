"""Who may see and change which letters: a department key only its own department's."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select

from service.auth import Principal
from service.tables import Letter


@dataclass
class Access:
    """What a caller may do with letters: a department only its own."""

    principal: Principal

    def scope(self, query: Select) -> Select:
        dept = self.principal.department
        return query if dept is None else query.where(Letter.department == dept)
