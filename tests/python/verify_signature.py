#!/usr/bin/env python3
"""Verifies one Switchyard delivery with the reference libraries, as a receiver would.

Reads one JSON object on stdin:

    {"scheme": "standard" | "stripe",
     "secret": "whsec_...",
     "headers": {"lower-cased-name": "value", ...},
     "body": "<the exact request body text>"}

- "standard": ``standardwebhooks.webhooks.Webhook(secret).verify(body, headers)`` (Standard Webhooks headers
  ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; the library also enforces its 5-minute timestamp
  tolerance).
- "stripe": ``stripe.Webhook.construct_event(body, headers["switchyard-signature"], secret)`` (default tolerance
  of 300 s).

Exit status 0 and "ok" on stdout when the library accepts the delivery; 1 with the library's error on stderr when
it rejects it; 2 when the input itself is unusable (a bug in the caller, not a verdict on the signature).
"""

import json
import sys
from typing import NoReturn


def fail_usage(message: str) -> NoReturn:
    print(f"verify_signature.py: bad input: {message}", file=sys.stderr)
    sys.exit(2)


def read_request() -> dict:
    try:
        request = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        fail_usage(f"stdin is not JSON: {e}")
    if not isinstance(request, dict):
        fail_usage("stdin must hold one JSON object")
    for field, kind in (("scheme", str), ("secret", str), ("headers", dict), ("body", str)):
        if not isinstance(request.get(field), kind):
            fail_usage(f"`{field}` must be a {kind.__name__}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in request["headers"].items()):
        fail_usage("`headers` must map strings to strings")
    return request


def verify_standard(secret: str, headers: dict, body: str) -> None:
    from standardwebhooks.webhooks import Webhook

    # verify() returns the parsed JSON body on success and raises WebhookVerificationError otherwise.
    Webhook(secret).verify(body, headers)


def verify_stripe(secret: str, headers: dict, body: str) -> None:
    import stripe

    # construct_event() raises stripe.SignatureVerificationError (or ValueError for a body that is not JSON).
    stripe.Webhook.construct_event(body, headers.get("switchyard-signature"), secret)


def main() -> int:
    request = read_request()
    verifiers = {"standard": verify_standard, "stripe": verify_stripe}
    verifier = verifiers.get(request["scheme"])
    if verifier is None:
        fail_usage(f"unknown scheme {request['scheme']!r}; expected one of {sorted(verifiers)}")
    headers = {name.lower(): value for name, value in request["headers"].items()}
    try:
        verifier(request["secret"], headers, request["body"])
    except Exception as e:  # the library's verdict, whatever its exception class
        print(f"{type(e).__module__}.{type(e).__qualname__}: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
