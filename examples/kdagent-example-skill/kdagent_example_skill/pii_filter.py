"""`pii_filter`: keep training examples that contain an email address or a phone number out of training."""

import re

from kdagent.hookspecs import hookimpl

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}", re.IGNORECASE)
PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\d{2,4}){2,4}(?!\d)"  # international: +44 20 7946 0958, +1-555-123-4567
    r"|(?<![\d-])(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-.]\d{4}(?!\d)"  # North American: (555) 123-4567, 555-123-4567
)
FIELDS = ("prompt", "completion", "chosen", "rejected")  # SFTExample and PreferencePair messages


@hookimpl
def kdagent_veto_example(example):
    for field in FIELDS:
        for message in getattr(example, field, None) or []:
            text = message.get("content") or ""
            # The reason names the kind of data, never the data itself: reasons may be logged.
            if EMAIL.search(text):
                return f"pii_filter: an email address in the {field}"
            if PHONE.search(text):
                return f"pii_filter: a phone number in the {field}"
    return None
