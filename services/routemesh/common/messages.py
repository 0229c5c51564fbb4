"""Chat messages on the wire: role names and the validation every service applies."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from routemesh.common.errors import InvalidRequest
from routemesh.v1 import common_pb2

ROLE_NAMES: dict[int, str] = {
    common_pb2.ROLE_SYSTEM: "system",
    common_pb2.ROLE_USER: "user",
    common_pb2.ROLE_ASSISTANT: "assistant",
    common_pb2.ROLE_TOOL: "tool",
}

def validate_messages(messages: Sequence[common_pb2.Message], field: str = "messages") -> None:
    """Raise InvalidRequest (with one violation per bad field) unless the messages can be classified."""
    if not messages:
        raise InvalidRequest(
            f"{field} must not be empty", field_violations=[(field, "at least one message is required")]
        )
    violations = [
        (f"{field}[{index}].role", "role must be one of SYSTEM, USER, ASSISTANT, TOOL")
        for index, message in enumerate(messages)
        if message.role not in ROLE_NAMES
    ]
    if violations:
        # InvalidRequest lists the first few of them (errors.MAX_FIELD_VIOLATIONS); the message says how many.
        raise InvalidRequest(f"{field} have an unspecified or unknown role ({len(violations):,} message(s))",
                             field_violations=violations)


def messages_to_tuples(messages: Iterable[common_pb2.Message]) -> list[tuple[str, str]]:
    """(role, content) pairs for classify(); call validate_messages first (unknown roles raise ValueError)."""
    pairs = []
    for message in messages:
        role = ROLE_NAMES.get(message.role)
        if role is None:
            raise ValueError(f"message role {message.role} has no name; validate_messages rejects it")
        pairs.append((role, message.content))
    return pairs
