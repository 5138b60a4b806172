"""Place and ETA: indexes for a model's latest successes (the median an ETA is made of) and
for the images started within the pacer's window (the queue's shares, the pacer's slots), both
read at every answer about a waiting batch (generation/eta.py, generation/places.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:10:00
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_generations_model_finished", "generations", ["model", "finished_at"])
    op.create_index("ix_generations_started", "generations", ["started_at"])


def downgrade():
    op.drop_index("ix_generations_started", table_name="generations")
    op.drop_index("ix_generations_model_finished", table_name="generations")
