"""a completed job can be revised: the revision its current (or coming) video belongs to

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 00:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite does it in place; a table rebuild would cascade into scenes).
    op.add_column('jobs', sa.Column('revision', sa.Integer(), nullable=False,
                                    server_default='0'))


def downgrade() -> None:
    op.drop_column('jobs', 'revision')
