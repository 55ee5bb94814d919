"""job priority and stage timeline; per-user rate-limit windows shared by API replicas

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 22:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite does it in place): a batch rebuild would drop and recreate `jobs`,
    # which with foreign keys on would cascade into scenes.
    op.add_column('jobs', sa.Column('priority', sa.String(length=16), nullable=False,
                                    server_default='normal'))
    # [{name, status, percent, startedAt, completedAt, error}], written by the job actor.
    op.add_column('jobs', sa.Column('stages', sa.JSON(), nullable=True))
    op.create_table('rate_limit_windows',
    sa.Column('owner_id', sa.String(length=255), nullable=False),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('owner_id', 'window_start', name=op.f('pk_rate_limit_windows'))
    )


def downgrade() -> None:
    op.drop_table('rate_limit_windows')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('stages')
        batch.drop_column('priority')
