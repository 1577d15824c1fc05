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
    ("Do you deliver on weekends?", ["Saturday"], ["every day"], ["shipping-rates"], []),
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
    ("How do I update my saved card?", ["Payment methods"], ["CVV"], ["payments"], []),
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
                # answer-question v3 declares customer_tier: every item must fill it.
                "variables": {"customer_tier": "gold" if n % 3 == 0 else "standard"},
            }
        )
    return with_context(out)


# The help-centre articles support-bot retrieves from, one "[id] text" line per passage. Items
# carry the passages of their expected sources (plus a distractor) as `variables.context`, so a
# prompt that passes {{ context }} to the model can answer and one that does not cannot.
KNOWLEDGE = {
    "refund-policy": [
        "You have 30 days from delivery to return an item for a refund.",
        "Without a receipt we can still refund you if you give us the order number.",
        "Refunds go back to the original payment method and take 5-7 business days "
        "to reach your card.",
        "The original shipping cost is not refunded.",
        "Sale items marked final sale are not refundable.",
        "Returns are free: print the prepaid label from your Orders page.",
        "If your refund has not arrived after 10 business days, contact your bank "
        "and then support.",
        "Items bought in any store can be returned online or in any store.",
        "Personalised items cannot be returned unless they arrive damaged.",
    ],
    "gift-returns": ["Gifts can be returned for store credit without the buyer being told."],
    "damaged-items": ["For a damaged item, send a photo within 7 days and we ship a replacement."],
    "exchanges": [
        "Exchanging shoes or clothes for a different size is a free exchange within 30 days."
    ],
    "electronics-returns": [
        "Opened electronics can be returned within 15 days, with a 15% restocking fee "
        "for electronics.",
    ],
    "shipping-rates": [
        "Standard shipping costs $4.99 and is free over $50.",
        "Standard delivery takes 3-5 business days.",
        "Next-day delivery costs $12.99 if you order by 2pm.",
        "We deliver on Saturday but not on Sunday.",
        "PO box addresses get standard shipping only.",
        "Our carriers are UPS and USPS.",
    ],
    "international-shipping": [
        "We ship internationally to 40 countries.",
        "Customs duties on international orders are paid by the customer.",
        "Express shipping to Canada is available: yes, for $19.99.",
    ],
    "order-changes": [
        "You can change the delivery address within 1 hour of ordering.",
        "An order that has already shipped cannot be cancelled: return it instead.",
    ],
    "order-tracking": [
        "Track your order with the tracking link in your shipping email.",
        "Orders ship from different warehouses, so one order can arrive as two packages.",
    ],
    "missing-packages": [
        "If a package shows delivered but is missing, wait 48 hours and check with neighbours.",
    ],
    "click-and-collect": ["Click and collect orders are ready to pick up in store within 2 hours."],
    "account-help": [
        "To reset your password use Forgot password on the sign-in page; we email a link.",
        "Change the email address on your account in Settings, then verify the new address.",
        "Each email address can have one account.",
        "Your past orders from the last 2 years are on the Orders page.",
    ],
    "account-deletion": [
        "Delete your account in Settings under Privacy; deletion completes after 30 days.",
        "Download your data from Settings under Privacy with export.",
    ],
    "account-security": [
        "After 5 failed sign-in attempts your account is locked for 15 minutes.",
        "Turn on two-factor authentication in Security with an authenticator app.",
    ],
    "email-preferences": ["Use the unsubscribe link at the bottom of any marketing email."],
    "payments": ["Update a saved card under Payment methods; we never show the full card number."],
    "loyalty": [
        "Loyalty points: you earn 1 point per $1 and 100 points are worth $5.",
        "Loyalty points expire after 12 months without a purchase.",
    ],
}


def context_for(sources: list[str], distractor: str) -> str:
    ids = [*sources, distractor] if distractor not in sources else list(sources)
    return "\n".join(f"[{sid}] {line}" for sid in ids for line in KNOWLEDGE.get(sid, []))


def with_context(rows: list[dict]) -> list[dict]:
    """Attach retrieved passages to every item (unanswerable items get unrelated ones)."""
    keys = sorted(KNOWLEDGE)
    for n, row in enumerate(rows):
        distractor = keys[n % len(keys)]
        sources = row["expected_sources"] or [keys[(n * 7) % len(keys)]]
        row.setdefault("variables", {})
        row["variables"] = {**row["variables"], "context": context_for(sources, distractor)}
    return rows
