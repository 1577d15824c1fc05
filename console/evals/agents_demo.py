"""The demo's agent: support-agent (a prompt offering three tools) and its golden set
support-tools, whose items say which tools must be called, with what arguments, and what
each tool answers. v1 copies order ids as the customer typed them ("#A-1042") and retries a
tool that failed until it is stopped; v2 is told not to, and passes."""

from __future__ import annotations

SUPPORT_TOOLS = [
    {
        "name": "lookup_order",
        "description": "Look up an order's status and delivery date by its order id.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {
                    "type": "string",
                    "pattern": "^[A-Z]-\\d{4}$",
                    "description": "e.g. A-1042",
                }
            },
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "issue_refund",
        "description": "Refund a delivered order to the customer's original payment method.",
        "parameters": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "pattern": "^[A-Z]-\\d{4}$"},
                "amount": {"type": "number", "exclusiveMinimum": 0},
            },
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "update_email",
        "description": "Change the email address on the customer's account.",
        "parameters": {
            "type": "object",
            "properties": {"email": {"type": "string", "format": "email"}},
            "required": ["email"],
            "additionalProperties": False,
        },
    },
]
_SYSTEM = (
    "You are Acme's support agent. Use the tools to look up orders, refund delivered orders and "
    "update account emails, then tell the customer what you found."
)
AGENT_V1 = {
    "system": _SYSTEM,
    "user": "{{ question }}",
    "variables": ["question"],
    "params": {},
    "tools": SUPPORT_TOOLS,
}
AGENT_V2 = {
    **AGENT_V1,
    "system": _SYSTEM
    + "\nPass order ids without the # (A-1042, not #A-1042)."
    + "\nNever retry a failed tool: tell the customer what failed and offer a human agent.",
}
AGENT_GATES = [
    {"metric": "tool_call_accuracy", "op": ">=", "threshold": 0.95},
    {"metric": "tool_args_valid", "op": ">=", "threshold": 0.95},
    {"metric": "step_bound", "op": ">=", "threshold": 1.0},
    {"metric": "pass_rate", "op": ">=", "threshold": 0.9},
]
STATUSES = [("shipped", "2026-12-04"), ("in transit", "2026-12-05"), ("delivered", "2026-11-28")]
ASKED = [
    "Where is my order #{o}?",
    "Has order #{o} shipped yet?",
    "When will my order #{o} arrive?",
    "What is the status of order #{o}?",
]
NEVER_REFUND = {"name": "issue_refund", "forbidden": True}


def _order(letter: str, n: int) -> str:
    return f"{letter}-{1000 + n * 37 % 9000:04d}"


def agent_items() -> list[dict]:
    """48 items: order status (never a refund), refunds (look up, then refund), the order system
    timing out (say so, do not retry), email changes, and questions that need no tool."""
    items = []
    for n in range(16):
        order = _order("A", n)
        status, date = STATUSES[n % len(STATUSES)]
        items.append({
            "id": f"status-{n + 1:02d}",
            "question": ASKED[n % len(ASKED)].format(o=order),
            "expected_contains": [status],
            "expected_tools": [
                {"name": "lookup_order", "args": {"order_id": order},
                 "result": {"status": status, "delivery_date": date}},
                NEVER_REFUND,
            ],
            "tags": ["order-status"],
        })  # fmt: skip
    for n in range(12):
        order = _order("R", n)
        reasons = ["it arrived broken", "I returned it last week", "it never worked"]
        items.append({
            "id": f"refund-{n + 1:02d}",
            "question": f"Please refund order #{order}, {reasons[n % len(reasons)]}.",
            "expected_contains": ["refunded"],
            "expected_tools": [
                {"name": "lookup_order", "args": {"order_id": order},
                 "result": {"status": "delivered", "delivery_date": "2026-11-20"}},
                {"name": "issue_refund", "args": {"order_id": order},
                 "result": {"refund": f"RF-{5000 + n}", "state": "refunded"}},
            ],
            "tags": ["refunds"],
        })  # fmt: skip
    for n in range(8):
        order = _order("T", n)
        items.append({
            "id": f"outage-{n + 1:02d}",
            "question": f"Where is my order #{order}? It's been two weeks.",
            "expected_contains": ["timed out"],
            "expected_tools": [
                {"name": "lookup_order", "args": {"order_id": order},
                 "result": {"error": "the order system timed out"}},
                NEVER_REFUND,
            ],
            "tags": ["tool-failure"],
        })  # fmt: skip
    names = ["ada", "grace", "alan", "edsger", "barbara", "donald", "frances", "ken"]
    for n, name in enumerate(names):
        email = f"{name}.{n + 3}@example.com"
        items.append({
            "id": f"email-{n + 1:02d}",
            "question": f"Please change my account email to {email}",
            "expected_contains": ["updated"],
            "expected_tools": [
                {"name": "update_email", "args": {"email": email},
                 "result": {"email": email, "state": "updated"}},
            ],
            "tags": ["account"],
        })  # fmt: skip
    for n, question in enumerate([
        "What are your opening hours?", "Do you ship to Canada?",
        "Can I talk to a person?", "Is there a student discount?",
    ]):  # fmt: skip
        items.append({
            "id": f"no-tool-{n + 1:02d}",
            "question": question,
            "expected_tools": [NEVER_REFUND],
            "tags": ["no-tool"],
        })  # fmt: skip
    return items
