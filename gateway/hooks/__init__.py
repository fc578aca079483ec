"""Webhooks and the SQS sink: integrators' hooks on uploads and media.

`gate` asks HOOK_URL whether an upload may be created (pre-create, blocking);
`announcer` writes every notification event to the MongoDB outbox together with the
commit it announces; `delivery` sends outbox rows to the sinks (`sinks`: the signed
HTTP POST and SQS) from any instance, with retries, backoff and a dead-letter state;
`events` builds and signs the event bodies. `Hooks.start` wires them from the settings.
"""
