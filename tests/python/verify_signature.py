#!/usr/bin/env python3
"""Verifies one Switchyard delivery with the reference libraries, as a receiver would.

Reads one JSON object on stdin:

    {"scheme": "standard" | "standard-asymmetric" | "stripe",
     "secret": "whsec_..." (for "standard-asymmetric": the "whpk_..." public key),
     "headers": {"lower-cased-name": "value", ...},
     "body": "<the exact request body text>"}

- "standard": ``standardwebhooks.webhooks.Webhook(secret).verify(body, headers)`` (Standard Webhooks headers
  ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``; the library also enforces its 5-minute timestamp
  tolerance).
- "standard-asymmetric": the ``v1a`` (Ed25519) entries of ``webhook-signature``, checked with ``cryptography``
  against the ``whpk_`` public key, as the Standard Webhooks spec defines them (the ``standardwebhooks`` package
  verifies only ``v1``).
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


def verify_standard_asymmetric(public_key: str, headers: dict, body: str) -> None:
    """Standard Webhooks' asymmetric form, which the ``standardwebhooks`` package does not verify: a ``v1a,``
    entry of ``webhook-signature`` must be the Ed25519 signature of ``{id}.{timestamp}.{body}`` under the
    ``whpk_`` public key (``cryptography``'s implementation), within the spec's 5-minute tolerance."""
    import base64
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not public_key.startswith("whpk_"):
        raise ValueError("the public key must start with whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len("whpk_"):], validate=True))
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > 5 * 60:
        raise ValueError(f"timestamp {timestamp} is outside the 5-minute tolerance")
    content = f"{msg_id}.{timestamp}.{body}".encode()
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature, validate=True), content)
            return
        except Exception:  # InvalidSignature, or a signature that is not base64
            continue
    raise ValueError("no v1a signature verifies under the public key")


def main() -> int:
    request = read_request()
    verifiers = {
        "standard": verify_standard,
        "standard-asymmetric": verify_standard_asymmetric,
        "stripe": verify_stripe,
    }
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
