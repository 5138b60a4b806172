"""How long an `Idempotency-Key` lives, and the sweep that deletes the expired ones.

The API's decorator (webapp.api.idempotency) gives a key its meaning; the reaper runs the sweep.
Both import it from here, below either of them.
"""

from datetime import timedelta

from sqlalchemy import delete

from ..extensions import db
from ..models import IdempotencyKey, utcnow

KEY_LIFETIME = timedelta(hours=24)


def purge_expired(now=None):
    """Delete the keys older than 24 hours (they replay nothing any more); answers how many.

    Its own unit of work: it commits.
    """
    cutoff = (now or utcnow()) - KEY_LIFETIME
    result = db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    db.session.commit()
    return result.rowcount
