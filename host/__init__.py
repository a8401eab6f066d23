"""Host controller: transports chosen by pen URL, asyncio core with a sync facade, safety."""

from .connection import AsyncPen, ConnectionNotice
from .pen import Pen, open_pen

__all__ = ["AsyncPen", "ConnectionNotice", "Pen", "open_pen"]
