"""pysnmp's MIB modules load from Python's bytecode cache (issue 9: compiling their source,
twice per module at every engine's start, cost about 1.2 MB of an agent's RSS)."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from probes import snmp_io  # noqa: F401  # loads pysnmp the agent's way (see that module)


def test_an_engine_loads_its_mibs_without_compiling_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

    SnmpEngine()  # writes any missing or stale cache entry, as the first start would
    compiled: list[str] = []
    real = builtins.compile

    def counting(source: Any, filename: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(str(filename))
        return real(source, filename, *args, **kwargs)

    monkeypatch.setattr(builtins, "compile", counting)
    engine = SnmpEngine()
    assert [f for f in compiled if "pysnmp" in f] == []
    # ...and the MIBs ran: the engine's own objects are there.
    mib = engine.get_mib_builder()
    (engine_id,) = mib.import_symbols("__SNMP-FRAMEWORK-MIB", "snmpEngineID")
    assert engine_id.syntax == engine.snmpEngineID
