"""job creation locks for the active-job limit

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 09:12:05.402318
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_creation_locks',
    sa.Column('owner_id', sa.String(length=255), nullable=False),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', name=op.f('pk_job_creation_locks'))
    )


def downgrade() -> None:
    op.drop_table('job_creation_locks')
