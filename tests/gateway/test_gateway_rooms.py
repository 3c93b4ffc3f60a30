"""The gateway's package as rooms (services/media_gateway/__init__.py): every import points
down the order below, so there is no cycle and no arrow back up, and the shared protocol
modules import nothing from services/. Read from the source with `ast`, TYPE_CHECKING
imports included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "services" / "media_gateway"
PREFIX = "callbridge.services.media_gateway"
SERVICES = ("callbridge.services", "services")

#: Top to bottom: a module may import only modules after it.
ORDER = [
    "cli", "server", "fencing", "session", "ending", "watchdog", "relay", "caller_control",
    "bargein", "turns", "caller_output", "admission", "model_link", "model_endpoints", "pacer",
    "ws_fastpath",
    "limits", "gc_pauses", "state", "send_gate", "tools", "metrics", "config", "sounds",
    "wire_watch",
]


def _imports(path: Path) -> set[str]:
    """Fully qualified names of the modules `path` imports (any depth, any branch)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _rooms_imported(path: Path) -> set[str]:
    rooms = set()
    for name in _imports(path):
        if name.startswith(PREFIX + "."):
            room = name[len(PREFIX) + 1:].split(".")[0]
            if (PACKAGE / f"{room}.py").exists():
                rooms.add(room)
    return rooms - {path.stem}


def test_every_module_has_a_room() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER), f"place new modules in ORDER: {modules ^ set(ORDER)}"


def test_imports_point_down_only() -> None:
    rank = {room: i for i, room in enumerate(ORDER)}
    upward = [f"{room} -> {dep}" for room in ORDER
              for dep in sorted(_rooms_imported(PACKAGE / f"{room}.py"))
              if rank[dep] <= rank[room]]
    assert upward == []


def test_relay_does_not_know_the_session() -> None:
    assert "session" not in _rooms_imported(PACKAGE / "relay.py")


def test_shared_wire_modules_import_no_service() -> None:
    for name in ("realtime_events", "infobip_media", "ws_close_codes", "pcm"):
        assert not any(n.startswith(SERVICES) for n in _imports(ROOT / "shared" / f"{name}.py"))
    for path in (ROOT / "shared" / "audio").glob("*.py"):
        assert not any(n.startswith(SERVICES) for n in _imports(path)), path.name
