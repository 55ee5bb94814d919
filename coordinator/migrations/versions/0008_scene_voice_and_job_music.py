"""a scene's spoken line (voice object, its length, what it was spoken from); a job's music bed

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 23:50:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite does it in place; a table rebuild would cascade).
    op.add_column('scenes', sa.Column('voice_key', sa.String(length=255), nullable=True))
    op.add_column('scenes', sa.Column('voice_duration_s', sa.Float(), nullable=True))
    # The scene version and the sha256 of the line (with language and voice) it was spoken from:
    # a line whose hash is unchanged is never spoken again.
    op.add_column('scenes', sa.Column('voice_version', sa.Integer(), nullable=True))
    op.add_column('scenes', sa.Column('voice_text_hash', sa.String(length=64), nullable=True))
    op.add_column('jobs', sa.Column('music_key', sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'music_key')
    with op.batch_alter_table('scenes') as batch:
        batch.drop_column('voice_text_hash')
        batch.drop_column('voice_version')
        batch.drop_column('voice_duration_s')
        batch.drop_column('voice_key')
