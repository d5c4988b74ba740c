"""The four reporting areas the partnership board reads, in report order."""

from __future__ import annotations

DEFAULT_AREAS: dict[str, str] = {
    "network_telephony": "Network/Telephony",
    "email": "Email",
    "internet_web": "Internet/web site services",
    "servers": "Centralised server infrastructure",
}

#: Where the collector books a provisional "site unreachable" outage.
NETWORK_AREA = "network_telephony"
