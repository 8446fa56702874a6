"""The conversation model: threading, states, assignment, views, filters, metrics, search."""

from tidings.conversations.ingest import IngestResult
from tidings.conversations.models import (
    Actor,
    ConversationDetail,
    ConversationSummary,
    Decision,
    Draft,
    Filters,
    MessageView,
    Page,
    Role,
    State,
    View,
)
from tidings.conversations.service import Conversations, Sent

__all__ = [
    "Actor",
    "ConversationDetail",
    "ConversationSummary",
    "Conversations",
    "Decision",
    "Draft",
    "Filters",
    "IngestResult",
    "MessageView",
    "Page",
    "Role",
    "Sent",
    "State",
    "View",
]
