"""Outbound messages: the rules every send obeys before it reaches a channel."""

from tidings.outbound.rules import check_outbound, outbound_problems

__all__ = ["check_outbound", "outbound_problems"]
