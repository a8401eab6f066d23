"""micropen wire protocol: messages declared once, COBS framing and a reliable link.

Sans-I/O: nothing here reads a clock, opens a port or starts a task. Callers pass bytes and
``now`` in, and get events, bytes to write and deadlines back.
"""

from . import messages as messages  # fills schema.REGISTRY whatever a program imports first
