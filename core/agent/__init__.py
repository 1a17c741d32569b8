"""The LangGraph agent: guard, retrieve, draft, assess, review, deliver."""
