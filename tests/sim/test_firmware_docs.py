"""docs/simulator.md shows exactly what the code's tables say."""

from __future__ import annotations

from pathlib import Path

from micropen.protocol.behaviour import TRANSITIONS, allowed_states_markdown, state_diagram
from micropen.protocol.messages import SimParam
from micropen.sim.faults import param_table_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"


def test_state_diagram_in_the_docs_is_drawn_from_the_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "```mermaid\n" + state_diagram() + "\n```" in text
    for (state, trigger), target in TRANSITIONS.items():
        if trigger.name != "RESET":
            assert f"{state.name} --> {target.name}: {trigger.value}" in text


def test_command_state_table_in_the_docs_matches_the_code() -> None:
    assert allowed_states_markdown() in DOC.read_text(encoding="utf-8")


def test_every_sim_parameter_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert param_table_markdown() in text
    for param in SimParam:
        assert f"`{param.name}`" in text
