"""Bounds on what availmon accepts from outside, each defined once (issue 15).

Per-deployment limits (message size, web connections and timeouts, the grace for a removed
check) are config keys with these as their reasons; the rest are fixed here.
"""

from __future__ import annotations

#: Reports, imports and periods cover these years only: older or later dates are typing
#: mistakes, and unbounded ones let one request walk millennia of business days.
FIRST_YEAR = 1990
LAST_YEAR = 2100
#: The longest period a report covers.
MAX_PERIOD_YEARS = 10

#: An outage CSV file, and any one of its fields (a cause, a note).
CSV_MAX_BYTES = 16 * 1024 * 1024
#: A config file: 40,000 checks of a few lines each fit many times over.
CONFIG_MAX_BYTES = 16 * 1024 * 1024
CSV_MAX_FIELD_CHARS = 2000

#: Check statuses in one heartbeat: far more than a site runs, far fewer than an attack sends.
MAX_HEARTBEAT_CHECKS = 1000

#: A secret file (password, token, community): one line, read whole.
SECRET_MAX_BYTES = 64 * 1024

#: MQTT framing around a payload (fixed header, topic, packet id, MQTT 5 properties): what the
#: broker's packet limit allows above ``collector.max_payload_bytes``.
MQTT_PACKET_OVERHEAD = 1024

#: What people write about an outage (the board, the API, ``outages annotate``), by field.
ANNOTATION_MAX_CHARS = {"cause": 500, "provider": 200, "note": 2000}
#: A maintenance window's reason, and the name a change is recorded under.
REASON_MAX_CHARS = 500
WHO_MAX_CHARS = 64
#: Rows one listing returns (``alerts list --limit``, the API's ``limit``).
MAX_LIST_ROWS = 10_000
