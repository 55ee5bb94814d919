"""Webhooks: job events POSTed to the owner's endpoints, signed as Standard Webhooks say.

- ``signing``: secrets and the ``webhook-*`` headers.
- ``target``: which URLs may receive (public https, or an operator-trusted network).
- ``outbox``: the delivery rows a job's status change writes in its own transaction.
- ``sender``: the loop in each API replica that claims due deliveries, sends and retries them.
"""
