"""Agent definitions: instructions, an allow-list of tools, and who they may hand off to or call as a tool.

An agent's tool list is fixed here; nothing in a conversation (a user message, a retrieved document) can add to
it. Handoffs appear to the model as `transfer_to_<agent>` tools, agents-as-tools as `ask_<agent>` tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from apps.agent.tools import Tool


@dataclass
class AgentSpec:
    name: str
    instructions: str
    tools: list[str] = field(default_factory=list)
    handoffs: list[str] = field(default_factory=list)  # agents this one may transfer the conversation to
    agent_tools: list[str] = field(default_factory=list)  # agents this one may consult and get an answer from
    description: str = ""
    mcp_tools: list[str] = field(default_factory=list)  # patterns of MCP tools it may call ("server.*")
    mcp_deny: list[str] = field(default_factory=list)  # ...and of those it may not
    guardrails: Any = None  # its GuardrailConfig; None: the runner's default (agent.guardrails)
    tool_first: bool = False  # its first step must call a tool: its answers come from its tools, not its memory


class HandoffArgs(BaseModel):
    reason: str = Field("", max_length=300, description="Why this agent is the right one.")


class AskArgs(BaseModel):
    task: str = Field(..., min_length=1, max_length=2000, description="The question for the other agent.")


HANDOFF_PREFIX = "transfer_to_"
ASK_PREFIX = "ask_"


def handoff_tool(target: AgentSpec) -> Tool:
    # The loop intercepts these calls; the function only runs if something bypasses it.
    return Tool(f"{HANDOFF_PREFIX}{target.name}", f"Hand the conversation to the {target.name} agent: "
                f"{target.description}", HandoffArgs, lambda a: f"handed off to {target.name}")


def ask_tool(target: AgentSpec) -> Tool:
    return Tool(f"{ASK_PREFIX}{target.name}", f"Ask the {target.name} agent and get its answer: "
                f"{target.description}", AskArgs, lambda a: "")


def default_agents() -> dict[str, AgentSpec]:
    specs = [
        AgentSpec("assistant", "You are a helpful assistant that solves tasks with tools.",
                  tools=["calculator", "current_time", "search_documents", "read_file", "list_files", "python"],
                  description="general assistant with every tool"),
        AgentSpec("triage", "You route each task to the best specialist. Do not answer yourself: transfer to "
                  "research for questions about documents, videos or files, to math for arithmetic or code.",
                  handoffs=["research", "math"], description="routes tasks to specialists"),
        AgentSpec("research", "You answer questions from the document collection, indexed videos and files. "
                  "Search first, then answer from what you found and name the source.",
                  tools=["search_documents", "search_videos", "read_file", "list_files", "current_time"],
                  agent_tools=["math"], description="searches documents, videos and files"),
        AgentSpec("math", "You solve arithmetic with the calculator and computations with the python sandbox.",
                  tools=["calculator", "python"], description="arithmetic and code"),
        # Calculator only: small local models offered the sandbox as well tend to write code for plain sums.
        AgentSpec("calculator", "You solve arithmetic with the calculator.", tools=["calculator"],
                  description="arithmetic with the calculator only"),
    ]
    return {s.name: s for s in specs}


def configured_agents(definitions: list) -> dict[str, AgentSpec]:
    """The built-in agents plus those from config (`agent.agents`), which replace built-ins of the same name."""
    agents = default_agents()
    for d in definitions:
        agents[d.name] = AgentSpec(d.name, d.instructions, list(d.tools), list(d.handoffs), list(d.agent_tools),
                                   d.description, list(d.mcp_tools), list(d.mcp_deny), d.guardrails, d.tool_first)
    return agents


def check_agents(agents: dict[str, AgentSpec], known_tools: set[str]) -> None:
    """Fail early on a definition that names a tool or agent that does not exist."""
    for a in agents.values():
        for t in a.tools:
            if t not in known_tools:
                raise ValueError(f"agent {a.name!r} lists unknown tool {t!r}")
        for other in a.handoffs + a.agent_tools:
            if other not in agents:
                raise ValueError(f"agent {a.name!r} refers to unknown agent {other!r}")
