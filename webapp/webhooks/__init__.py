"""Webhooks as a part the service uses: which addresses may be called (addresses.py), the
Standard Webhooks signature (signing.py), and one bounded HTTP delivery (sending.py).

Nothing here knows batches or the database: generation/announcements.py writes the outbox and
generation/deliveries.py sends it through these (see docs/webhooks.md).
"""
