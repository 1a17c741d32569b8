"""The agent graph: guard -> retrieve -> draft -> assess -> (deliver | review -> deliver)."""
from __future__ import annotations

import threading
from typing import Literal

from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core import db
from core.agent import nodes
from core.agent.state import AgentContext, AgentState


def after_guard(state: AgentState) -> Literal["retrieve", "deliver"]:
    return "deliver" if state.get("route") == "declined" else "retrieve"


def after_retrieve(state: AgentState) -> Literal["draft", "deliver"]:
    return "deliver" if state.get("route") == "declined" else "draft"


def after_assess(state: AgentState) -> Literal["review", "deliver"]:
    return "review" if state.get("route") == "review" else "deliver"


def build_graph(checkpointer: PostgresSaver | None) -> CompiledStateGraph:
    builder = StateGraph(AgentState, context_schema=AgentContext)
    builder.add_node("guard", nodes.guard)
    builder.add_node("retrieve", nodes.retrieve)
    builder.add_node("draft", nodes.draft)
    builder.add_node("assess", nodes.assess)
    builder.add_node("review", nodes.review)
    builder.add_node("deliver", nodes.deliver)
    builder.add_edge(START, "guard")
    builder.add_conditional_edges("guard", after_guard)
    builder.add_conditional_edges("retrieve", after_retrieve)
    builder.add_edge("draft", "assess")
    builder.add_conditional_edges("assess", after_assess)
    builder.add_edge("review", "deliver")
    builder.add_edge("deliver", END)
    return builder.compile(checkpointer=checkpointer)


_graphs: dict[str, CompiledStateGraph] = {}
_lock = threading.Lock()


def get_graph(url: str | None = None) -> CompiledStateGraph:
    """The compiled graph with LangGraph's Postgres checkpointer on our database, one per process.
    The saver needs autocommit connections, so it has a small pool of its own."""
    url = url or db.database_url()
    with _lock:
        if url not in _graphs:
            pool = ConnectionPool(url, min_size=1, max_size=4, open=True, name="checkpointer",
                                  kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
            saver = PostgresSaver(pool)  # type: ignore[arg-type]
            saver.setup()
            _graphs[url] = build_graph(saver)
        return _graphs[url]


def reset_graphs() -> None:
    """Forget compiled graphs and close their pools (tests; a process switching databases)."""
    with _lock:
        for graph in _graphs.values():
            graph.checkpointer.conn.close()  # type: ignore[union-attr]
        _graphs.clear()
