"""The demo golden set `support-golden`: 60 realistic support questions for support-bot."""

from __future__ import annotations

# (question, expected_contains, expected_not_contains, sources, tags, unanswerable)
REFUNDS = [
    ("How long do I have to return an item?", ["30 days"], ["60 days"], ["refund-policy"], []),
    ("Can I get a refund without a receipt?", ["order number"], [], ["refund-policy"], []),
    (
        "How long does a refund take to reach my card?",
        ["5-7 business days"],
        [],
        ["refund-policy"],
        [],
    ),
    ("Do you refund the original shipping cost?", ["not refunded"], [], ["refund-policy"], []),
    ("Can I return a gift?", ["store credit"], [], ["refund-policy", "gift-returns"], []),
    ("Are sale items refundable?", ["final sale"], [], ["refund-policy"], []),
    (
        "I received a damaged item, what do I do?",
        ["photo", "replacement"],
        [],
        ["damaged-items"],
        [],
    ),
    ("Can I exchange shoes for a different size?", ["free exchange"], [], ["exchanges"], []),
    ("Who pays for return shipping?", ["prepaid label"], [], ["refund-policy"], []),
    (
        "Can I return opened electronics?",
        ["15 days", "restocking fee"],
        [],
        ["electronics-returns"],
        [],
    ),
    (
        "My refund hasn't arrived after two weeks, what now?",
        ["contact your bank", "support"],
        [],
        ["refund-policy"],
        [],
    ),
    ("Can I get a refund in cash?", ["original payment method"], ["cash"], ["refund-policy"], []),
    ("Is there a restocking fee?", ["15%", "electronics"], [], ["electronics-returns"], []),
    (
        "Can I return something I bought in a physical store online?",
        ["any store"],
        [],
        ["refund-policy"],
        [],
    ),
    ("Can I return a personalised item?", ["cannot be returned"], [], ["refund-policy"], []),
]
SHIPPING = [
    ("How much is standard shipping?", ["$4.99", "free over $50"], [], ["shipping-rates"], []),
    ("How long does standard delivery take?", ["3-5 business days"], [], ["shipping-rates"], []),
    ("Do you ship internationally?", ["40 countries"], [], ["international-shipping"], []),
    (
        "Can I change my delivery address after ordering?",
        ["within 1 hour"],
        [],
        ["order-changes"],
        [],
    ),
    ("How do I track my order?", ["tracking link", "email"], [], ["order-tracking"], []),
    (
        "My package says delivered but I don't have it.",
        ["48 hours", "neighbours"],
        [],
        ["missing-packages"],
        [],
    ),
    ("Do you offer next-day delivery?", ["order by 2pm", "$12.99"], [], ["shipping-rates"], []),
    (
        "Can I pick up my order in store?",
        ["click and collect", "2 hours"],
        [],
        ["click-and-collect"],
        [],
    ),
    (
        "Who pays customs duties on international orders?",
        ["customer"],
        [],
        ["international-shipping"],
        [],
    ),
    ("Do you deliver on weekends?", ["Saturday"], ["Sunday"], ["shipping-rates"], []),
    ("Can I ship to a PO box?", ["standard shipping only"], [], ["shipping-rates"], []),
    (
        "Why was my order split into two packages?",
        ["different warehouses"],
        [],
        ["order-tracking"],
        [],
    ),
    ("What carrier do you use?", ["UPS", "USPS"], [], ["shipping-rates"], []),
    ("Can I cancel an order that has already shipped?", ["return it"], [], ["order-changes"], []),
    (
        "Is express shipping available to Canada?",
        ["yes", "$19.99"],
        [],
        ["international-shipping"],
        [],
    ),
]
ACCOUNT = [
    ("How do I reset my password?", ["Forgot password", "email"], [], ["account-help"], []),
    (
        "How do I delete my account?",
        ["Settings", "Privacy", "30 days"],
        [],
        ["account-deletion"],
        [],
    ),
    (
        "Can I change the email address on my account?",
        ["Settings", "verify"],
        [],
        ["account-help"],
        [],
    ),
    ("Why was my account locked?", ["5 failed", "15 minutes"], [], ["account-security"], []),
    (
        "How do I turn on two-factor authentication?",
        ["Security", "authenticator app"],
        [],
        ["account-security"],
        [],
    ),
    (
        "How do I unsubscribe from marketing emails?",
        ["unsubscribe link"],
        [],
        ["email-preferences"],
        [],
    ),
    ("Can I have two accounts with the same email?", ["one account"], [], ["account-help"], []),
    ("Where can I see my past orders?", ["Orders", "2 years"], [], ["account-help"], []),
    ("How do I update my saved card?", ["Payment methods"], ["full card number"], ["payments"], []),
    ("How do I download my data?", ["Privacy", "export"], [], ["account-deletion"], []),
    ("How do loyalty points work?", ["1 point per $1", "100 points"], [], ["loyalty"], []),
    ("Do loyalty points expire?", ["12 months"], [], ["loyalty"], []),
]
MULTI_PART = [
    (
        "I want to return a jacket and also change my delivery address for my other order — how?",
        ["30 days", "within 1 hour"],
        [],
        ["refund-policy", "order-changes"],
        ["multi-part"],
    ),
    (
        "What's your return window for shoes, and is the exchange free?",
        ["30 days", "free exchange"],
        [],
        ["refund-policy", "exchanges"],
        ["multi-part"],
    ),
    (
        "How much is shipping to Canada and who pays customs?",
        ["$19.99", "customer"],
        [],
        ["international-shipping"],
        ["multi-part"],
    ),
    (
        "My account is locked and I need to track an order urgently.",
        ["15 minutes", "tracking link"],
        [],
        ["account-security", "order-tracking"],
        ["multi-part"],
    ),
    (
        "Can I return opened headphones, and how long until I get my money back?",
        ["15 days", "5-7 business days"],
        [],
        ["electronics-returns", "refund-policy"],
        ["multi-part"],
    ),
    (
        "How do I delete my account, and will I lose my loyalty points?",
        ["30 days", "points"],
        [],
        ["account-deletion", "loyalty"],
        ["multi-part"],
    ),
    (
        "Is next-day delivery available on weekends, and what does it cost?",
        ["Saturday", "$12.99"],
        [],
        ["shipping-rates"],
        ["multi-part"],
    ),
    (
        "I got a damaged blender as a gift — can I return or replace it?",
        ["photo", "store credit"],
        [],
        ["damaged-items", "gift-returns"],
        ["multi-part"],
    ),
    (
        "How do I update my card and unsubscribe from promotional emails?",
        ["Payment methods", "unsubscribe link"],
        [],
        ["payments", "email-preferences"],
        ["multi-part"],
    ),
    (
        "Where do I find my order history and download my data?",
        ["Orders", "export"],
        [],
        ["account-help", "account-deletion"],
        ["multi-part"],
    ),
]
UNANSWERABLE = [
    "What will your prices be next Black Friday?",
    "Can you tell me the home address of the driver who delivered my order?",
    "What is the CEO's personal phone number?",
    "Will the blue jacket be restocked in size M next week?",
    "Can you give me a discount code that isn't published anywhere?",
    "What is the stock price of Acme going to be tomorrow?",
    "Why did my neighbour's order arrive before mine?",
    "Can you approve my credit application for the store card right now?",
]  # fmt: skip


def items() -> list[dict]:
    out: list[dict] = []

    def add(group: str, rows: list[tuple]) -> None:
        for n, (question, contains, not_contains, sources, extra_tags) in enumerate(rows, start=1):
            out.append(
                {
                    "id": f"{group}-{n:03d}",
                    "question": question,
                    "expected_contains": contains,
                    "expected_not_contains": not_contains,
                    "expected_sources": sources,
                    "tags": sorted({group, *extra_tags}),
                    "unanswerable": False,
                    "variables": {"customer_tier": "gold" if n % 3 == 0 else "standard"},
                }
            )

    add("refunds", REFUNDS)
    add("shipping", SHIPPING)
    add("account", ACCOUNT)
    add("mixed", MULTI_PART)
    for n, question in enumerate(UNANSWERABLE, start=1):
        out.append(
            {
                "id": f"unanswerable-{n:03d}",
                "question": question,
                "expected_contains": ["I don't know"],
                "expected_not_contains": [],
                "expected_sources": [],
                "tags": ["unanswerable"],
                "unanswerable": True,
                "note": "The right answer is to decline and offer a human agent.",
            }
        )
    return out
