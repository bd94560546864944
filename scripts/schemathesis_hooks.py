"""Schemathesis hooks of scripts/fuzz-api.sh (loaded through SCHEMATHESIS_HOOKS).

Generated `Idempotency-Key` values repeat (Hypothesis favours short strings such as "0"), and a
key sent again with other content is rightly refused with 422 IDEMPOTENCY_KEY_REUSED: most
generated writes would be answered for the key, not judged on their data, and Schemathesis
would warn that the schema and the validation disagree. So every generated key that follows
the rule (1-128 printable ASCII characters) becomes a fresh one; a key that breaks the rule
(the negative phase) is sent as generated. Replays and reuse are covered by the API tests.
"""

import re
import uuid

import schemathesis

KEY_RULE = re.compile(r"[\x21-\x7e]{1,128}")


@schemathesis.hook
def before_call(context, case, kwargs):
    """Before every call of every phase (examples and coverage cases are not mapped)."""
    for name, value in (case.headers or {}).items():
        if name.lower() == "idempotency-key" and isinstance(value, str) and KEY_RULE.fullmatch(value):
            case.headers[name] = str(uuid.uuid4())
