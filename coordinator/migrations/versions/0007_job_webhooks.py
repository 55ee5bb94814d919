"""a job can name a webhook endpoint; endpoints that only such jobs notify

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 22:25:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite does it in place; a table rebuild would cascade into scenes).
    op.add_column('webhook_endpoints', sa.Column('jobs_only', sa.Boolean(), nullable=False,
                                                 server_default=sa.false()))
    # No foreign key: an endpoint deleted later simply stops being notified.
    op.add_column('jobs', sa.Column('webhook_id', sa.String(length=36), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'webhook_id')
    op.drop_column('webhook_endpoints', 'jobs_only')
